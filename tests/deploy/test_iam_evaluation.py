"""The IAM statements of both deployments, evaluated (issue 23 part 4, ADR 024).

Each function role's policies as template.yaml and terraform/ write them, every intrinsic
resolved to concrete ARNs (tests/deploy/iam_policies.py), are asked concrete requests by an IAM
policy evaluator (@cloud-copilot/iam-simulate, Strict mode: identity and resource policies,
explicit denies, every condition operator): what key-guard may do to roles, what the public
webhook may read and write, what the roll-up of pending usage may do (and that budget-check no
longer reads the table's stream), that no role may do everything, that only key-guard acts on
IAM, and who may publish to the alerts topic. The deployment asked is the one with every optional
input given, so every optional grant is there.

Run by scripts/test: python -m unittest discover -s tests/deploy
"""

import copy
import re
import unittest

from iam_policies import (ACCOUNT, DENY_ALL, REGION, SHUTDOWN_TAG, Request, evaluate, resources_of,
                          sam_deployment, terraform_deployment, template, terraform_texts, _secret)
from test_parity import ROOT

TAGGED = {SHUTDOWN_TAG: "true"}
ROLE = f"arn:aws:iam::{ACCOUNT}:role/runaway-workload"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
OWN_POLICY = f"arn:aws:iam::{ACCOUNT}:policy/anything-goes"
GUARDED_USER = f"arn:aws:iam::{ACCOUNT}:user/ci-deployer"

# Everything key-guard may do in IAM, on the most it could be asked about (a tagged role,
# AWSDenyAll, a guarded user): docs/security.md, docs/shutdown.md, docs/keys.md
KEY_GUARD_IAM = {
    "iam:AttachRolePolicy", "iam:DetachRolePolicy",  # AWSDenyAll on tagged roles only
    "iam:GetRole", "iam:ListAttachedRolePolicies", "iam:GetRolePolicy",  # reading what it stops
    "iam:ListAccessKeys", "iam:UpdateAccessKey",  # the guarded users' keys
    "iam:ListServiceSpecificCredentials", "iam:UpdateServiceSpecificCredential",  # their Bedrock API keys
    "iam:PutUserPolicy", "iam:DeleteUserPolicy",  # denying their older sessions
}

# the table's partitions (adapters/aws/src/dynamo.rs): those the public webhook writes (usage,
# counters, observations, alert claims, its audit entries, idempotency markers), and the rest
WEBHOOK_WRITES = ["USAGE#openai/prod", "SPEND#openai/prod", "SCOPES#2026-11", "OBS#openai-prod", "SRCDAY#gcp-data", "ALERT#openai-prod",
                  "OPEN_ALERTS", "MSG#sns-message#m-1", "MSG#gcp-message#m-2", "MSG#gcp-crossing#b-1"]
FORBIDDEN_TO_WEBHOOK = ["KILL#openai/prod", "KEYS", "BUDGETS", "BUDGET#openai-prod", "KEYACTION#key-1", "DELIVERY#a-1",
                        "DIGEST#ops-slack", "SUMMARY#openai", "CACHE#costs", "OPEN_ALERTS#x", "kill#openai/prod", "",
                        # another function's markers: a key-theft finding's acknowledgement
                        "MSG#security-ack#key-1#burst#2026-11-22", "MSG#forged-alert#x"]

_IAM_SAMPLES = None


def iam_samples():
    """Every IAM action and the resources it takes (a guarded user for the user actions)."""
    global _IAM_SAMPLES
    if _IAM_SAMPLES is None:
        samples = resources_of("iam:*")
        for action, resources in samples.items():
            if any(":user/" in r for r in resources):
                resources.append(GUARDED_USER)
        _IAM_SAMPLES = samples
    return _IAM_SAMPLES


def allowed(requests):
    return sorted({r.action for r in requests if r.decision == "Allowed"})


class Evaluated:
    """The assertions, for one deployment (subclasses say which)."""

    deployment = None
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.d = cls.deployment()

    def decide(self, requests, exact=True):
        """Evaluates requests; none may be refused as input, and with exact none may carry a
        context key the evaluator had to leave out (the request would not test what it says)."""
        evaluate(requests)
        for r in requests:
            self.assertNotEqual(r.decision, "error", f"{self.d.source}: {r}: {r.errors}")
            if exact:
                self.assertEqual(r.ignored, [], f"{self.d.source}: {r}: context keys not applicable")
        return requests

    def assertDecisions(self, requests, expected, exact=True):
        self.decide(requests, exact)
        self.assertEqual([(r.action, r.resource, r.context, r.decision) for r in requests],
                         [(r.action, r.resource, r.context, e) for r, e in zip(requests, expected, strict=True)],
                         self.d.source)

    # ------------------------------------------------------------ key-guard and roles

    def test_key_guard_attaches_and_detaches_only_aws_deny_all_and_only_on_tagged_roles(self):
        kg = self.d.role_of("key-guard")
        requests, expected = [], []
        for action in ("iam:AttachRolePolicy", "iam:DetachRolePolicy"):
            for policy, context, decision in [
                (DENY_ALL, TAGGED, "Allowed"),
                (ADMIN, TAGGED, "ImplicitlyDenied"),
                (OWN_POLICY, TAGGED, "ImplicitlyDenied"),
                ("arn:aws:iam::aws:policy/AWSDenyAllX", TAGGED, "ImplicitlyDenied"),
                (DENY_ALL, {}, "ImplicitlyDenied"),  # an untagged role
            ]:
                requests.append(Request(kg, action, ROLE, {"iam:PolicyARN": policy, **context}))
                expected.append(decision)
        # another account's role, tagged or not, is not the account's to stop
        requests.append(Request(kg, "iam:AttachRolePolicy", "arn:aws:iam::444455556666:role/x", {"iam:PolicyARN": DENY_ALL, **TAGGED}))
        expected.append("ImplicitlyDenied")
        self.assertDecisions(requests, expected)

    def test_key_guard_holds_only_tagged_scaling_at_zero_in_any_region(self):
        # finding #30: scalable targets and Auto Scaling groups, each only when tagged, in
        # every region [shutdown] regions may name (finding #9)
        kg = self.d.role_of("key-guard")
        requests, expected = [], []
        for region in (REGION, "eu-west-1"):
            target = f"arn:aws:application-autoscaling:{region}:{ACCOUNT}:scalable-target/0ec1a2b3c4d5e6f7"
            group = (f"arn:aws:autoscaling:{region}:{ACCOUNT}:autoScalingGroup:"
                     "8a1b2c3d-0000-4000-8000-000000000001:autoScalingGroupName/batch")
            for action, resource in [
                ("application-autoscaling:RegisterScalableTarget", target),
                ("autoscaling:SuspendProcesses", group),
                ("autoscaling:ResumeProcesses", group),
                ("autoscaling:UpdateAutoScalingGroup", group),
            ]:
                for context, decision in [(TAGGED, "Allowed"), ({}, "ImplicitlyDenied")]:
                    requests.append(Request(kg, action, resource, context))
                    expected.append(decision)
        other = f"arn:aws:application-autoscaling:{REGION}:444455556666:scalable-target/0ec1a2b3c4d5e6f7"
        requests.append(Request(kg, "application-autoscaling:RegisterScalableTarget", other, TAGGED))
        expected.append("ImplicitlyDenied")
        self.assertDecisions(requests, expected)

    def test_key_guard_cannot_grant_a_role_or_policy_anything(self):
        kg = self.d.role_of("key-guard")
        actions = ["iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion",
                   "iam:UpdateAssumeRolePolicy", "iam:PassRole", "iam:CreateRole", "iam:CreatePolicy",
                   "iam:PutRolePermissionsBoundary", "iam:DeleteRolePermissionsBoundary", "iam:AttachUserPolicy",
                   "iam:CreateAccessKey", "iam:AddUserToGroup", "iam:TagRole", "iam:UntagRole"]
        samples = resources_of(*actions)
        requests = [Request(kg, action, resource, {**TAGGED, "iam:PolicyARN": DENY_ALL})
                    for action in actions for resource in {*samples[action], "*"}]
        self.decide(requests, exact=False)  # the most permissive context, keys an action does not take left out
        self.assertEqual(allowed(requests), [], self.d.source)

    def test_key_guard_may_do_in_iam_exactly_what_is_documented(self):
        kg = self.d.role_of("key-guard")
        requests = [Request(kg, action, resource, {**TAGGED, "iam:PolicyARN": DENY_ALL})
                    for action, resources in iam_samples().items() for resource in resources]
        self.decide(requests, exact=False)
        self.assertEqual(allowed(requests), sorted(KEY_GUARD_IAM), self.d.source)
        # the users' own inline policies: only the guarded users'
        others = self.decide([Request(kg, a, f"arn:aws:iam::{ACCOUNT}:user/someone-else")
                              for a in ("iam:PutUserPolicy", "iam:UpdateAccessKey", "iam:UpdateServiceSpecificCredential")])
        self.assertEqual(allowed(others), [], self.d.source)

    def test_nobody_but_key_guard_acts_on_iam(self):
        kg = self.d.role_of("key-guard")["arn"]
        requests = [Request(role, action, resource, {**TAGGED, "iam:PolicyARN": DENY_ALL})
                    for role in self.d.roles.values() if role["arn"] != kg
                    for action, resources in iam_samples().items() for resource in resources]
        self.decide(requests, exact=False)
        self.assertEqual([r for r in requests if r.decision == "Allowed"], [], self.d.source)

    def test_no_role_may_do_everything(self):
        for name, role in self.d.roles.items():
            for policy in role["policies"]:
                for s in policy["policy"]["Statement"]:
                    actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                    self.assertNotIn("NotAction", s, name)
                    self.assertNotIn("NotResource", s, name)
                    for a in actions:
                        self.assertFalse(a == "*" or a.endswith(":*"), f"{self.d.source}: {name}: {a}")
        probes = {
            "iam:CreateUser": f"arn:aws:iam::{ACCOUNT}:user/intruder",
            "sts:AssumeRole": f"arn:aws:iam::{ACCOUNT}:role/OrganizationAccountAccessRole",
            "s3:GetObject": "arn:aws:s3:::any-bucket/any-key",
            "kms:Decrypt": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "dynamodb:DeleteTable": self.d.arns["table"],
            "dynamodb:Scan": self.d.arns["table"],
            "lambda:UpdateFunctionCode": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:spendguard-key-guard",
            "secretsmanager:GetSecretValue": _secret("someone-elses-secret"),
            "secretsmanager:DeleteSecret": self.d.arns["signing_key"],
            "sns:SetTopicAttributes": self.d.arns["alerts_topic"],
            "ec2:RunInstances": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*",
            "organizations:LeaveOrganization": "*",
        }
        requests = [Request(role, action, resource) for role in self.d.roles.values() for action, resource in probes.items()]
        self.decide(requests)
        self.assertEqual([r for r in requests if r.decision == "Allowed"], [], self.d.source)

    # ------------------------------------------------------------ the public webhook

    def test_the_webhook_reads_its_own_secrets_and_no_admin_key(self):
        webhook = self.d.role_of("budget-webhook")
        own = [_secret("spendguard-usage"), _secret("spendguard-status"), self.d.arns["signing_key"]]
        foreign = [_secret("openai-admin"), _secret("anthropic-admin"), _secret("gcp-shutdown"),
                   _secret("openai-prod-key"), _secret("slack-ops")]
        requests = [Request(webhook, "secretsmanager:GetSecretValue", s) for s in own + foreign]
        requests.append(Request(webhook, "ce:GetCostAndUsage", "*"))
        requests.append(Request(webhook, "ce:GetCostForecast", "*"))
        self.assertDecisions(requests, ["Allowed"] * len(own) + ["ImplicitlyDenied"] * (len(foreign) + 2))

    WRITES = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")

    def webhook_writes(self, leading_keys):
        webhook = self.d.role_of("budget-webhook")
        return [Request(webhook, action, self.d.arns["table"], {"dynamodb:LeadingKeys": keys})
                for keys in leading_keys for action in self.WRITES]

    def test_the_webhook_cannot_write_kill_switches_keys_or_budgets(self):
        requests = self.decide(self.webhook_writes(
            [[pk] for pk in FORBIDDEN_TO_WEBHOOK]
            + [["USAGE#openai/prod", "KILL#openai/prod"]]))  # a batch with one item outside them
        self.assertEqual([r for r in requests if r.decision == "Allowed"], [], self.d.source)
        # nor without naming a key (the Null guard: ForAllValues alone matches an empty set)
        webhook = self.d.role_of("budget-webhook")
        self.assertEqual(allowed(self.decide([Request(webhook, a, self.d.arns["table"]) for a in self.WRITES])), [], self.d.source)

    def test_the_webhook_only_reads_items_outside_its_own(self):
        # every DynamoDB action on the table, on a kill switch: GetItem, Query, BatchGetItem only
        webhook = self.d.role_of("budget-webhook")
        on_table = [a for a, resources in resources_of("dynamodb:*").items() if any(re.search(r":table/[^/]+$", r) for r in resources)]
        requests = self.decide([Request(webhook, a, self.d.arns["table"], {"dynamodb:LeadingKeys": ["KILL#openai/prod"]})
                                for a in on_table], exact=False)
        self.assertEqual(allowed(requests), ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query"], self.d.source)

    def test_the_webhook_writes_its_own_items(self):
        requests = self.webhook_writes([[pk] for pk in WEBHOOK_WRITES] + [WEBHOOK_WRITES])
        self.assertDecisions(requests, ["Allowed"] * len(requests))

    def test_the_webhook_adds_audit_entries_and_cannot_change_or_delete_them(self):
        requests = self.webhook_writes([["AUDIT#2026-11"]])
        self.assertDecisions(requests, ["Allowed", "ImplicitlyDenied", "ImplicitlyDenied", "ImplicitlyDenied"])

    # ------------------------------------------------------------ the roll-up of pending usage (ADR 031)

    STREAM_READS = ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator")

    def test_the_roll_up_does_what_a_roll_up_does(self):
        rollup, table, stream = self.d.role_of("usage-rollup"), self.d.arns["table"], self.d.arns["stream"]
        requests = [Request(rollup, a, stream) for a in self.STREAM_READS]
        requests.append(Request(rollup, "dynamodb:ListStreams", "*"))
        # a leaf's pending items, the scope index `roll_up: all` pages through
        requests += [Request(rollup, "dynamodb:Query", table, {"dynamodb:LeadingKeys": [pk]})
                     for pk in ("SPEND#openai/prod/key-1", "SCOPES#2026-12")]
        # its transaction: pending items deleted, counters added to, holds deleted and lowered,
        # spend moved after a period ended marked
        requests += [Request(rollup, a, table, {"dynamodb:LeadingKeys": [pk]})
                     for pk in ("SPEND#openai/prod/key-1", "SPEND#*", "HOLDS#openai-cap@2026-12")
                     for a in ("dynamodb:DeleteItem", "dynamodb:UpdateItem")]
        requests.append(Request(rollup, "dynamodb:UpdateItem", table, {"dynamodb:LeadingKeys": ["LATE_SPEND#13"]}))
        self.assertDecisions(requests, ["Allowed"] * len(requests), exact=False)

    def test_the_roll_up_touches_nothing_else(self):
        rollup, table = self.d.role_of("usage-rollup"), self.d.arns["table"]
        # no alert published, no secret read (admin keys, keys, the signing key), no Cost
        # Explorer, no budgets
        requests = [Request(rollup, "sns:Publish", self.d.arns["alerts_topic"], resource_policy=self.d.topic_policies[self.d.arns["alerts_topic"]])]
        requests += [Request(rollup, "secretsmanager:GetSecretValue", secret)
                     for secret in (_secret("openai-admin"), _secret("anthropic-admin"), _secret("openai-prod-key"),
                                    _secret("slack-ops"), self.d.arns["signing_key"])]
        requests += [Request(rollup, "ce:GetCostAndUsage", "*"),
                     Request(rollup, "budgets:ViewBudget", f"arn:aws:budgets::{ACCOUNT}:budget/monthly")]
        # no kill switch, key, budget or audit entry; no write outside its transaction's items
        requests += [Request(rollup, a, table, {"dynamodb:LeadingKeys": [pk]})
                     for pk in ("KILL#openai/prod", "KEYS", "BUDGETS", "AUDIT#2026-12", "RESERVE#r-1", "USAGE#u-1")
                     for a in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query")]
        requests += [Request(rollup, a, table, {"dynamodb:LeadingKeys": ["SPEND#openai/prod/key-1"]})
                     for a in ("dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:GetItem", "dynamodb:BatchGetItem")]
        # nor without naming a key (ForAllValues alone matches an empty set)
        requests += [Request(rollup, a, table) for a in ("dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:DeleteItem")]
        self.decide(requests, exact=False)
        self.assertEqual([r for r in requests if r.decision != "ImplicitlyDenied" and r.decision != "ExplicitlyDenied"], [], self.d.source)

    def test_budget_check_no_longer_reads_the_stream(self):
        # ADR 031 defect 2: the stream is the roll-up's; budget-check's role cannot take it
        check, stream = self.d.role_of("budget-check"), self.d.arns["stream"]
        requests = self.decide([Request(check, a, stream) for a in self.STREAM_READS] + [Request(check, "dynamodb:ListStreams", "*")],
                               exact=False)
        self.assertEqual(allowed(requests), [], self.d.source)

    # ------------------------------------------------------------ who may order a kill

    def test_only_the_documented_publishers_may_publish_alerts(self):
        topic = self.d.arns["alerts_topic"]
        policy = self.d.topic_policies[topic]
        publishers = {f: self.d.role_of(f)["arn"] for f in ("budget-check", "budget-webhook", "daily-aggregate", "key-guard")}
        stranger = {"arn": f"arn:aws:iam::{ACCOUNT}:role/ci-deployer", "policies": [{"name": "broad", "policy": {
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": "*"}]}}]}
        roles = list(self.d.roles.values()) + [stranger]
        requests = self.decide([Request(role, "sns:Publish", topic, resource_policy=policy) for role in roles])
        self.assertEqual(sorted(r.role["arn"] for r in requests if r.decision == "Allowed"), sorted(publishers.values()), self.d.source)
        (refused,) = [r for r in requests if r.role is stranger]
        self.assertEqual(refused.decision, "ExplicitlyDenied")  # the topic's policy, whatever IAM grants
        # and without the topic's policy the stranger could: the deny is what stops it
        (unguarded,) = self.decide([Request(stranger, "sns:Publish", topic)])
        self.assertEqual(unguarded.decision, "Allowed")


class TemplateEvaluated(Evaluated, unittest.TestCase):
    deployment = staticmethod(sam_deployment)


class TerraformEvaluated(Evaluated, unittest.TestCase):
    deployment = staticmethod(terraform_deployment)


class LoosenedStatementsAreCaught(unittest.TestCase):
    """The assertions above can fail: a statement loosened in a copy is seen by the evaluator."""

    def test_a_stream_event_left_on_budget_check_is_caught(self):
        # SAM gives a stream event's function AWSLambdaDynamoDBExecutionRole: moved back to
        # budget-check, its role reads the stream again
        t = template()
        events = t["Resources"]["UsageRollupFunction"]["Properties"]["Events"]
        t["Resources"]["BudgetCheckFunction"]["Properties"]["Events"]["PendingUsage"] = events.pop("PendingUsage")
        d = sam_deployment(t)
        (records,) = evaluate([Request(d.role_of("budget-check"), "dynamodb:GetRecords", d.arns["stream"])])
        self.assertEqual(records.decision, "Allowed")

    def test_a_roll_up_statement_without_its_leading_keys_is_caught(self):
        texts = terraform_texts()
        marker = '"dynamodb:LeadingKeys" = ["SPEND#*", "HOLDS#*", "LATE_SPEND#*"]'
        self.assertIn(marker, texts["main.tf"])
        texts["main.tf"] = texts["main.tf"].replace(marker, '"dynamodb:LeadingKeys" = ["*"]')
        d = terraform_deployment(texts)
        (kill,) = evaluate([Request(d.role_of("usage-rollup"), "dynamodb:DeleteItem", d.arns["table"],
                                    {"dynamodb:LeadingKeys": ["KILL#openai/prod"]})])
        self.assertEqual(kill.decision, "Allowed")

    def test_a_shutdown_statement_without_its_tag_condition_is_caught(self):
        text = (ROOT / "template.yaml").read_text()
        marker = ('                  "iam:PolicyARN": !Sub arn:${AWS::Partition}:iam::aws:policy/AWSDenyAll\n'
                  '                "Null":\n                  "aws:ResourceTag/spendguard:shutdown": "false"\n')
        self.assertIn(marker, text)
        loosened = text.replace(marker, marker.split('                "Null"')[0])
        kg = sam_deployment(template(loosened)).role_of("key-guard")
        (untagged,) = evaluate([Request(kg, "iam:AttachRolePolicy", ROLE, {"iam:PolicyARN": DENY_ALL})])
        self.assertEqual(untagged.decision, "Allowed")

    def test_a_policy_arn_condition_widened_to_any_aws_policy_is_caught(self):
        texts = terraform_texts()
        marker = 'ArnEquals = { "iam:PolicyARN" = "arn:${local.partition}:iam::aws:policy/AWSDenyAll" }'
        self.assertIn(marker, texts["main.tf"])
        texts["main.tf"] = texts["main.tf"].replace(marker, 'ArnLike = { "iam:PolicyARN" = "arn:${local.partition}:iam::aws:policy/*" }')
        kg = terraform_deployment(texts).role_of("key-guard")
        (admin,) = evaluate([Request(kg, "iam:AttachRolePolicy", ROLE, {"iam:PolicyARN": ADMIN, **TAGGED})])
        self.assertEqual(admin.decision, "Allowed")

    def test_a_publisher_left_out_of_the_topic_policy_is_caught(self):
        d = sam_deployment()
        topic = d.arns["alerts_topic"]
        policy = copy.deepcopy(d.topic_policies[topic])
        policy["Statement"][0]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"].remove(d.role_of("daily-aggregate")["arn"])
        (refused,) = evaluate([Request(d.role_of("daily-aggregate"), "sns:Publish", topic, resource_policy=policy)])
        self.assertEqual(refused.decision, "ExplicitlyDenied")


if __name__ == "__main__":
    unittest.main()
