"""template.yaml and terraform/ describe the same system.

For every function: architecture, runtime, memory, timeout, environment variable names, the
IAM actions of each statement, schedules (expression, input, retries), SNS subscriptions
(topic, filter policy); and the shared pieces: the dashboard and the scheduler's input, which
must be what the functions accept (the events/ fixtures).

Run by scripts/test: python -m unittest discover -s tests/deploy
"""

import json
import pathlib
import re
import unittest

import hcl2
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODULE = ROOT / "terraform" / "modules" / "spendguard"


# ---------------------------------------------------------------- reading the template

class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub, ...) as {"Ref": ...} / {"Fn::Sub": ...}."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


CfnLoader.add_multi_constructor("!", _tag)


def template(text=None):
    return yaml.load(text if text is not None else (ROOT / "template.yaml").read_text(), Loader=CfnLoader)


def _present(item):
    """A statement or list item, unwrapped from !If [cond, x, AWS::NoValue]."""
    if isinstance(item, dict) and "Fn::If" in item:
        return item["Fn::If"][1]
    return item


def _parameter_default(t, name):
    return str(t["Parameters"][name]["Default"])


def _sam_expression(t, value):
    """A schedule expression with parameters at their defaults."""
    if isinstance(value, dict) and "Ref" in value:
        return _parameter_default(t, value["Ref"])
    if isinstance(value, dict) and "Fn::Sub" in value:
        return re.sub(r"\$\{(\w+)\}", lambda m: _parameter_default(t, m.group(1)), value["Fn::Sub"])
    return value


TOPICS = {"AlertsTopic": "alerts", "BudgetsTopic": "budgets"}


def sam_system(t):
    glob = t["Globals"]["Function"]
    system = {}
    for resource in t["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        name = resource["Metadata"]["BuildProperties"]["Binary"]
        props = resource["Properties"]
        env = dict(glob["Environment"]["Variables"])
        env.update(props.get("Environment", {}).get("Variables", {}))
        statements = {}
        for policy in props.get("Policies", []):
            for statement in policy["Statement"]:
                statement = _present(statement)
                statements[statement["Sid"]] = sorted(statement["Action"])
        schedules, subscriptions = [], []
        for event in props.get("Events", {}).values():
            p = event["Properties"]
            if event["Type"] == "ScheduleV2":
                schedules.append((
                    _sam_expression(t, p["ScheduleExpression"]),
                    json.loads(p["Input"]),
                    p["RetryPolicy"]["MaximumRetryAttempts"],
                    p["RetryPolicy"]["MaximumEventAgeInSeconds"],
                    "DeadLetterConfig" in p,
                ))
            elif event["Type"] == "SNS":
                subscriptions.append((
                    TOPICS[p["Topic"]["Ref"]],
                    json.dumps(p.get("FilterPolicy"), sort_keys=True),
                    "RedrivePolicy" in p,
                ))
        system[name] = {
            "runtime": props.get("Runtime", glob["Runtime"]),
            "architectures": props.get("Architectures", glob["Architectures"]),
            "handler": props.get("Handler", glob["Handler"]),
            "memory": props.get("MemorySize", glob["MemorySize"]),
            "timeout": props["Timeout"],
            "environment": sorted(env),
            "statements": statements,
            "schedules": sorted(schedules, key=repr),
            "subscriptions": sorted(subscriptions),
            "tracing": props.get("Tracing", glob["Tracing"]),
            "dead_letters": "DeadLetterQueue" in props,
        }
    return system


# ---------------------------------------------------------------- reading terraform

def _unquote(value):
    """python-hcl2 keeps the quotes of string literals ("\"x\""): read them as JSON strings."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _variable_defaults(files):
    defaults = {}
    for text in files:
        for block in hcl2.loads(text).get("variable", []):
            for name, spec in block.items():
                defaults[_unquote(name)] = _unquote(spec.get("default"))
    return defaults


def terraform_texts():
    return {p.name: p.read_text() for p in sorted(MODULE.glob("*.tf"))}


def _terraform_parts(texts):
    """(locals, resources by (kind, name)) of the module's files."""
    locals_, resources = {}, {}
    for text in texts.values():
        parsed = hcl2.loads(text)
        for block in parsed.get("locals", []):
            locals_.update(_unquote(block))
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    resources[(_unquote(kind), _unquote(name))] = _unquote(body)
    return locals_, resources


def terraform_system(texts):
    locals_, resources = _terraform_parts(texts)
    defaults = _variable_defaults(texts.values())

    def expression(value):
        return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(defaults[m.group(1)]), value)

    function = resources[("aws_lambda_function", "function")]
    subscription = resources[("aws_sns_topic_subscription", "subscription")]
    schedule_target = resources[("aws_scheduler_schedule", "schedule")]["target"][0]
    system = {}
    for name, spec in locals_["functions"].items():
        schedules = [
            (
                expression(s["expression"]),
                json.loads(s["input"]),
                schedule_target["retry_policy"][0]["maximum_retry_attempts"],
                s["max_age"],
                "dead_letter_config" in schedule_target,
            )
            for s in locals_["schedules"].values()
            if s["function"] == name
        ]
        subscriptions = [
            (
                re.match(r"\$\{aws_sns_topic\.(\w+)\.arn\}", s["topic"]).group(1),
                json.dumps(json.loads(s["filter"]) if s["filter"] else None, sort_keys=True),
                "redrive_policy" in subscription,
            )
            for s in locals_["subscriptions"].values()
            if s["function"] == name
        ]
        env = {"SPENDGUARD_TABLE", *spec["environment"]}
        system[name] = {
            "runtime": function["runtime"],
            "architectures": function["architectures"],
            "handler": function["handler"],
            "memory": spec["memory"],
            "timeout": spec["timeout"],
            "environment": sorted(env),
            "statements": {sid: sorted(actions) for sid, actions in locals_["permissions"][name].items()},
            "schedules": sorted(schedules, key=repr),
            "subscriptions": sorted(subscriptions),
            "tracing": function["tracing_config"][0]["mode"],
            "dead_letters": "dead_letter_config" in function,
        }
    return system


def differences(sam, tf):
    """Human-readable differences, empty when both sides describe the same system."""
    out = []
    for name in sorted(set(sam) | set(tf)):
        if name not in sam or name not in tf:
            out.append(f"{name}: only in {'terraform' if name in tf else 'template.yaml'}")
            continue
        for key in sorted(set(sam[name]) | set(tf[name])):
            a, b = sam[name].get(key), tf[name].get(key)
            if key == "statements":
                for sid in sorted(set(a) | set(b)):
                    if a.get(sid) != b.get(sid):
                        only_sam = sorted(set(a.get(sid, [])) - set(b.get(sid, [])))
                        only_tf = sorted(set(b.get(sid, [])) - set(a.get(sid, [])))
                        out.append(f"{name}: statement {sid}: only in template.yaml {only_sam}, only in terraform {only_tf}")
            elif a != b:
                out.append(f"{name}: {key}: template.yaml {a!r} != terraform {b!r}")
    return out


# ---------------------------------------------------------------- the tests

# ---------------------------------------------------------------- budget-check's dead man's switch

def sam_silent_alarm(t):
    """The alarm on budget-check's completed runs, as both sides can say it."""
    p = t["Resources"]["BudgetCheckSilentAlarm"]["Properties"]
    queries = []
    for m in p["Metrics"]:
        if "Expression" in m:
            queries.append((m["Id"], m["Expression"], m["ReturnData"]))
        else:
            stat = m["MetricStat"]
            dimensions = {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}
            function = "budget-check" if dimensions == {"FunctionName": {"Ref": "BudgetCheckFunction"}} else str(dimensions)
            queries.append((m["Id"], stat["Metric"]["Namespace"], stat["Metric"]["MetricName"], function,
                            stat["Period"], stat["Stat"], m["ReturnData"]))
    return {
        "queries": sorted(queries),
        "evaluation_periods": p["EvaluationPeriods"],
        "threshold": p["Threshold"],
        "comparison": p["ComparisonOperator"],
        "missing_data": p["TreatMissingData"],
    }


def terraform_silent_alarm(texts):
    _, resources = _terraform_parts(texts)
    body = resources[("aws_cloudwatch_metric_alarm", "budget_check_silent")]
    queries = []
    for q in body["metric_query"]:
        if "expression" in q:
            queries.append((q["id"], q["expression"], q["return_data"]))
        else:
            (m,) = q["metric"]
            named = 'function["budget-check"]' in str(m["dimensions"])
            queries.append((q["id"], m["namespace"], m["metric_name"], "budget-check" if named else str(m["dimensions"]),
                            m["period"], m["stat"], q["return_data"]))
    return {
        "queries": sorted(queries),
        "evaluation_periods": body["evaluation_periods"],
        "threshold": body["threshold"],
        "comparison": body["comparison_operator"],
        "missing_data": body["treat_missing_data"],
    }


class Parity(unittest.TestCase):
    def test_template_and_terraform_describe_the_same_functions(self):
        sam, tf = sam_system(template()), terraform_system(terraform_texts())
        self.assertEqual(
            sorted(sam),
            ["alert-fanout", "budget-check", "budget-webhook", "daily-aggregate", "key-guard"],
        )
        self.assertEqual(differences(sam, tf), [])
        for name, f in sam.items():
            self.assertEqual(f["architectures"], ["arm64"], name)
            self.assertEqual(f["runtime"], "provided.al2023", name)
            self.assertTrue(f["dead_letters"], name)

    def test_a_permission_removed_from_the_template_is_caught(self):
        text = (ROOT / "template.yaml").read_text()
        marker = "Action: [iam:ListAccessKeys, iam:UpdateAccessKey]"
        self.assertIn(marker, text)
        modified = text.replace(marker, "Action: [iam:ListAccessKeys]")
        found = differences(sam_system(template(modified)), terraform_system(terraform_texts()))
        self.assertEqual(
            found,
            ["key-guard: statement IamAccessKeys: only in template.yaml [], only in terraform ['iam:UpdateAccessKey']"],
        )

    def test_a_permission_removed_from_terraform_is_caught(self):
        texts = terraform_texts()
        marker = '"dynamodb:BatchWriteItem", "dynamodb:TransactWriteItems"]'
        webhook = texts["main.tf"].index('"budget-webhook" = {')
        at = texts["main.tf"].index(marker, webhook)
        texts["main.tf"] = texts["main.tf"][:at] + '"dynamodb:BatchWriteItem"]' + texts["main.tf"][at + len(marker):]
        found = differences(sam_system(template()), terraform_system(texts))
        self.assertEqual(
            found,
            ["budget-webhook: statement State: only in template.yaml ['dynamodb:TransactWriteItems'], only in terraform []"],
        )

    def test_a_changed_timeout_or_variable_is_caught(self):
        texts = terraform_texts()
        texts["main.tf"] = texts["main.tf"].replace("timeout = 900", "timeout = 300", 1)
        texts["main.tf"] = texts["main.tf"].replace("SPENDGUARD_DELIVERY_DEADLINE_SECONDS", "SPENDGUARD_DEADLINE", 1)
        found = differences(sam_system(template()), terraform_system(texts))
        self.assertEqual(len(found), 2, found)
        self.assertTrue(any("daily-aggregate: timeout" in f for f in found), found)
        self.assertTrue(any("alert-fanout: environment" in f for f in found), found)

    def test_the_schedules_send_what_the_functions_accept(self):
        sam = sam_system(template())
        fixtures = {
            "budget-check": ROOT / "events/budget-check/scheduler.json",
            "alert-fanout": ROOT / "events/alert-fanout/flush-digests.json",
            "key-guard": ROOT / "events/key-guard/drill.json",
        }
        for name, path in fixtures.items():
            (schedule,) = sam[name]["schedules"]
            self.assertEqual(schedule[1], json.loads(path.read_text()), name)
        (nightly,) = sam["daily-aggregate"]["schedules"]
        self.assertEqual(nightly[1], {}, "daily-aggregate takes {} as yesterday")

    def test_both_deploy_the_same_dashboard(self):
        t = template()
        body = t["Resources"]["SpendDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        self.assertEqual(json.loads(body), json.loads((ROOT / "deploy/dashboard.json").read_text()))
        self.assertIn('file("${path.module}/../../../deploy/dashboard.json")', terraform_texts()["functions.tf"])

    def test_an_alarm_fires_when_budget_check_has_not_completed_a_run_for_15_minutes(self):
        sam = sam_silent_alarm(template())
        self.assertEqual(sam, terraform_silent_alarm(terraform_texts()))
        self.assertEqual(
            sam,
            {
                "queries": [
                    ("completed", "invocations - FILL(errors, 0)", True),
                    ("errors", "AWS/Lambda", "Errors", "budget-check", 900, "Sum", False),
                    ("invocations", "AWS/Lambda", "Invocations", "budget-check", 900, "Sum", False),
                ],
                "evaluation_periods": 1,
                "threshold": 1,
                "comparison": "LessThanThreshold",
                "missing_data": "breaching",
            },
        )

    def test_a_silent_alarm_that_ignores_missing_data_is_caught(self):
        texts = terraform_texts()
        marker = 'treat_missing_data  = "breaching"'
        self.assertIn(marker, texts["functions.tf"])
        texts["functions.tf"] = texts["functions.tf"].replace(marker, 'treat_missing_data  = "notBreaching"')
        self.assertNotEqual(sam_silent_alarm(template()), terraform_silent_alarm(texts))

    def test_key_guard_hears_only_what_it_acts_on(self):
        t = template()
        events = t["Resources"]["KeyGuardFunction"]["Properties"]["Events"]
        self.assertEqual(
            events["Emergencies"]["Properties"]["FilterPolicy"],
            {"actions": ["disable_keys", "shutdown", "reduce_limits", "rotate_keys"]},
        )

    def test_shutdown_changes_only_resources_that_opted_in_by_tag(self):
        t = template()
        policy = t["Resources"]["KeyGuardFunction"]["Properties"]["Policies"][0]["Statement"]
        (statement,) = [s for s in policy if isinstance(s, dict) and s.get("Sid") == "ShutdownOptedIn"]
        self.assertEqual(statement["Condition"], {"Null": {"aws:ResourceTag/spendguard:shutdown": "false"}})
        texts = terraform_texts()
        self.assertIn('ShutdownOptedIn = { Null = { "aws:ResourceTag/spendguard:shutdown" = "false" } }', texts["main.tf"])
        self.assertIn("{ Condition = local.conditions[sid] }", texts["functions.tf"])

    def test_aws_budgets_may_publish_only_for_this_account(self):
        t = template()
        statement = t["Resources"]["BudgetsTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        self.assertEqual(statement["Principal"], {"Service": "budgets.amazonaws.com"})
        self.assertIn("aws:SourceAccount", statement["Condition"]["StringEquals"])
        self.assertIn("aws:SourceArn", statement["Condition"]["ArnLike"])


if __name__ == "__main__":
    unittest.main()
