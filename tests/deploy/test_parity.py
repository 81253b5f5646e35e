"""template.yaml and terraform/ describe the same system.

For every function: architecture, runtime, memory, timeout, environment variable names, the
IAM actions of each statement, schedules (expression, input, retries), SNS subscriptions
(topic, filter policy), reserved concurrency (the input and its default), asynchronous
invocation (retries, maximum event age, where failed events go); and the shared pieces: the
alarms (names, metrics, thresholds, actions), who may publish to the alerts topic, the
alert-signing secret (generated how, read by whom, named by which variable), the shutdown
statements of key-guard's role in full (actions, resources, conditions), the absence of
iam:PutRolePolicy from every role, the operator e-mail subscription, the operator route through fan-out (input, subscription,
invoke permission, environment), the dashboard and the scheduler's input, which must be what the
functions accept (the events/ fixtures); the tags on every taggable resource, the permissions
boundary on every role, the table's deletion protection, the validation of the optional ARNs,
and the outputs (the same names, each with a description).

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


# ---------------------------------------------------------------- tags, boundaries, outputs

DEPLOYMENT_TAG = "spendguard:deployment"
# resource kinds that take tags, on each side, under one name; and those that take none (a new
# kind must be put in one or the other: the tests below refuse one that is in neither)
SAM_TAGGABLE = {
    "AWS::Serverless::Function": "function", "AWS::DynamoDB::Table": "table", "AWS::SNS::Topic": "topic",
    "AWS::SecretsManager::Secret": "secret", "AWS::SQS::Queue": "queue", "AWS::Logs::LogGroup": "log group",
    "AWS::CloudWatch::Alarm": "alarm",
}
SAM_UNTAGGABLE = {"AWS::SNS::TopicPolicy", "AWS::SNS::Subscription", "AWS::Lambda::Permission", "AWS::SQS::QueuePolicy",
                  "AWS::CloudWatch::Dashboard"}
TF_TAGGABLE = {
    "aws_lambda_function": "function", "aws_dynamodb_table": "table", "aws_sns_topic": "topic",
    "aws_secretsmanager_secret": "secret", "aws_sqs_queue": "queue", "aws_cloudwatch_log_group": "log group",
    "aws_cloudwatch_metric_alarm": "alarm", "aws_iam_role": "role",
}
TF_UNTAGGABLE = {"aws_sns_topic_policy", "aws_secretsmanager_secret_version", "aws_sns_topic_subscription", "aws_lambda_permission",
                 "aws_sqs_queue_policy", "aws_iam_role_policy", "aws_lambda_function_event_invoke_config", "aws_scheduler_schedule",
                 "aws_lambda_function_url", "aws_cloudwatch_dashboard",
                 # SAM's DynamoDB event makes an event source mapping that carries no tags: none on either side
                 "aws_lambda_event_source_mapping"}


def sam_tags(t):
    """(kind -> how many resources carry the deployment tag, [resources that do not])."""
    glob = t["Globals"]["Function"]
    function_tagged = glob.get("Tags", {}).get(DEPLOYMENT_TAG) == {"Ref": "AWS::StackName"}
    tagged, untagged = {}, []
    for logical, resource in t["Resources"].items():
        kind = resource["Type"]
        if kind in SAM_UNTAGGABLE:
            continue
        if kind not in SAM_TAGGABLE:
            untagged.append(f"{logical} ({kind}: taggable or not? add it to SAM_TAGGABLE or SAM_UNTAGGABLE)")
            continue
        props = resource.get("Properties", {})
        if kind == "AWS::Serverless::Function":
            # the roles SAM generates (the function's, its schedules') carry the tags too
            ok = function_tagged and glob.get("PropagateTags") is True and "Tags" not in props and "PropagateTags" not in props
        else:
            ok = {"Key": DEPLOYMENT_TAG, "Value": {"Ref": "AWS::StackName"}} in props.get("Tags", [])
        if ok:
            tagged[SAM_TAGGABLE[kind]] = tagged.get(SAM_TAGGABLE[kind], 0) + 1
        else:
            untagged.append(logical)
    return tagged, untagged


def sam_pending_usage(t):
    """The trigger on the table's stream (ADR 031): the function it invokes, its settings, its
    failure queue and its filter; and the table's stream view."""
    functions = sam_function_names(t)
    ((logical, event),) = [
        (logical, event)
        for logical, resource in t["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
        for event in resource["Properties"].get("Events", {}).values()
        if event["Type"] == "DynamoDB"
    ]
    props = event["Properties"]
    return {
        "function": functions[logical],
        "stream": props["Stream"]["Fn::GetAtt"],
        "settings": (props["StartingPosition"], props["BatchSize"], props["MaximumBatchingWindowInSeconds"],
                     props["BisectBatchOnFunctionError"], props["MaximumRetryAttempts"], props["MaximumRecordAgeInSeconds"]),
        "response_types": props.get("FunctionResponseTypes", []),
        "on_failure": props["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0],
        "filter": [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]],
        "view": t["Resources"]["StateTable"]["Properties"]["StreamSpecification"]["StreamViewType"],
    }


def terraform_pending_usage(texts):
    """The same read from terraform/ (the filter's jsonencode evaluated for its literal object)."""
    _, resources = _terraform_parts(texts)
    (mapping,) = [kind for kind in resources if kind[0] == "aws_lambda_event_source_mapping"]
    m = resources[mapping]
    table = resources[("aws_dynamodb_table", "state")]
    (destination,) = m["destination_config"]
    (on_failure,) = destination["on_failure"]
    (criteria,) = m["filter_criteria"]
    patterns = []
    for f in criteria["filter"]:
        hcl = re.fullmatch(r"\$\{jsonencode\((.*)\)\}", f["pattern"], re.S).group(1)
        # HCL's object literal as JSON: keys quoted, `=` as `:`
        patterns.append(json.loads(re.sub(r"(\w+)\s*=", r'"\1":', hcl)))
    function = re.fullmatch(r'\$\{aws_lambda_function\.function\["([\w-]+)"\]\.arn\}', m["function_name"])
    return {
        "function": function.group(1) if function else m["function_name"],
        "stream": ["StateTable", "StreamArn"] if m["event_source_arn"] == "${aws_dynamodb_table.state.stream_arn}" else m["event_source_arn"],
        "settings": (m["starting_position"], m["batch_size"], m["maximum_batching_window_in_seconds"],
                     m["bisect_batch_on_function_error"], m["maximum_retry_attempts"], m["maximum_record_age_in_seconds"]),
        "response_types": m.get("function_response_types", []),
        "on_failure": "FailedEventsQueue" if on_failure["destination_arn"] == "${aws_sqs_queue.failed_events.arn}" else on_failure["destination_arn"],
        "filter": patterns,
        "view": table["stream_view_type"] if table.get("stream_enabled") else None,
    }


def terraform_tags(texts):
    """(kind -> how many resources carry local.tags, [resources that do not]); roles apart,
    since SAM generates its own (one per function and one per schedule)."""
    locals_, resources = _terraform_parts(texts)
    tagged, untagged = {}, []
    for (kind, name), body in resources.items():
        if kind in TF_UNTAGGABLE:
            continue
        if kind not in TF_TAGGABLE:
            untagged.append(f"{kind}.{name} (taggable or not? add it to TF_TAGGABLE or TF_UNTAGGABLE)")
            continue
        if body.get("tags") != "${local.tags}":
            untagged.append(f"{kind}.{name}")
            continue
        how_many = len(locals_["functions"]) if body.get("for_each") == "${local.functions}" else 1
        assert body.get("for_each") in (None, "${local.functions}") and "count" not in body, (kind, name)
        tagged[TF_TAGGABLE[kind]] = tagged.get(TF_TAGGABLE[kind], 0) + how_many
    tagged.pop("role", None)
    return tagged, untagged


FUNCTION_LOGICAL = {"BudgetCheck": "budget-check", "AlertFanout": "alert-fanout", "KeyGuard": "key-guard",
                    "BudgetWebhook": "budget-webhook", "DailyAggregate": "daily-aggregate", "UsageRollup": "usage-rollup"}
PER_FUNCTION_OUTPUTS = {"FunctionName": "function_names", "FunctionArn": "function_arns", "RoleArn": "role_arns"}


def sam_outputs(t):
    """Each output under terraform's name (function_arns[key-guard] for KeyGuardFunctionArn)
    -> its description."""
    outputs = {}
    for name, output in t["Outputs"].items():
        m = re.fullmatch(f"({'|'.join(FUNCTION_LOGICAL)})({'|'.join(PER_FUNCTION_OUTPUTS)})", name)
        key = f"{PER_FUNCTION_OUTPUTS[m.group(2)]}[{FUNCTION_LOGICAL[m.group(1)]}]" if m else _snake(name)
        outputs[key] = output.get("Description")
    return outputs


def terraform_outputs(texts):
    """Each output (a map by function as one entry per function) -> its description."""
    locals_, _ = _terraform_parts(texts)
    outputs = {}
    for text in texts.values():
        for block in hcl2.loads(text).get("output", []):
            for name, body in _unquote(block).items():
                value = body["value"]
                if re.fullmatch(r"\$\{\{for k, \w+ in aws_(lambda_function|iam_role)\.function : k => .+\}\}", value):
                    for f in locals_["functions"]:
                        outputs[f"{name}[{f}]"] = body.get("description")
                else:
                    outputs[name] = body.get("description")
    return outputs


def _terraform_pattern(condition):
    """The regex of a variable's validation, as template.yaml's AllowedPattern for an optional
    parameter would write it ("^(...)?$")."""
    (pattern,) = re.findall(r'regex\("((?:[^"\\]|\\.)*)"', condition)
    pattern = json.loads(f'"{pattern}"')
    assert pattern.startswith("^") and pattern.endswith("$"), pattern
    return f"^({pattern[1:-1]})?$"


OPTIONAL_ARNS = ["OpenAiAdminKeyArn", "AnthropicAdminKeyArn", "GcpShutdownCredentialArn", "SesIdentityArn", "PermissionsBoundary"]

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
QUEUES = {"FailedEventsQueue": "failed-events"}


def _snake(name):
    """A template parameter's name as the module's variable (KeyGuardReservedConcurrency ->
    key_guard_reserved_concurrency)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _sam_function_name(props):
    """A function's name without the stack's (`${AWS::StackName}-usage-rollup` -> usage-rollup)."""
    return re.fullmatch(r"\$\{AWS::StackName\}-([a-z0-9-]+)", props["FunctionName"]["Fn::Sub"]).group(1)


def sam_function_names(t):
    """Logical id of each function -> its name (budget-check, usage-rollup, ...)."""
    return {
        logical: _sam_function_name(resource["Properties"])
        for logical, resource in t["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def sam_binaries(t):
    """Logical id of each function -> the binary it runs (usage-rollup runs budget-check's)."""
    return {
        logical: resource["Metadata"]["BuildProperties"]["Binary"]
        for logical, resource in t["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def _sam_reserved_concurrency(t, value):
    """(variable, default) of `!If [Reserve.., !Ref Param, !Ref AWS::NoValue]` whose condition
    is `Param != 0`, or None without a reservation."""
    if value is None:
        return None
    condition, param, otherwise = value["Fn::If"]
    if t["Conditions"][condition] != {"Fn::Not": [{"Fn::Equals": [param, "0"]}]} or otherwise != {"Ref": "AWS::NoValue"}:
        raise ValueError(f"ReservedConcurrentExecutions: 0 must mean no reservation ({value})")
    return (_snake(param["Ref"]), int(_parameter_default(t, param["Ref"])))


def _sam_async(props):
    config = props.get("EventInvokeConfig")
    if config is None:
        return None
    failure = config["DestinationConfig"]["OnFailure"]
    return {
        "retries": config["MaximumRetryAttempts"],
        "max_age": config["MaximumEventAgeInSeconds"],
        "on_failure": QUEUES[failure["Destination"]["Fn::GetAtt"][0]] if failure["Type"] == "SQS" else repr(failure),
    }


def sam_system(t):
    glob = t["Globals"]["Function"]
    system = {}
    for resource in t["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        name = _sam_function_name(props)
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
            "binary": resource["Metadata"]["BuildProperties"]["Binary"],
            "role": env.get("SPENDGUARD_ROLE"),
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
            "dead_letters": QUEUES[props["DeadLetterQueue"]["TargetArn"]["Fn::GetAtt"][0]] if "DeadLetterQueue" in props else None,
            "reserved_concurrency": _sam_reserved_concurrency(t, props.get("ReservedConcurrentExecutions")),
            "async": _sam_async(props),
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
    invoke_config = resources[("aws_lambda_function_event_invoke_config", "function")]
    subscription = resources[("aws_sns_topic_subscription", "subscription")]

    def reserved(value):
        if value is None:
            return None
        variable = re.fullmatch(r"\$\{var\.(\w+)\}", value).group(1)
        return (variable, defaults[variable])

    def asynchronous(spec):
        # the one form read here: local.functions' async settings, for the functions that have them
        assert (invoke_config["for_each"], invoke_config["function_name"], invoke_config["maximum_retry_attempts"],
                invoke_config["maximum_event_age_in_seconds"]) == (
            "${{for k, f in local.functions : k => f.async if f.async != null}}",
            "${aws_lambda_function.function[each.key].function_name}", "${each.value.retries}", "${each.value.max_age}",
        ), invoke_config
        if spec["async"] is None:
            return None
        (destination,) = invoke_config["destination_config"]
        (failure,) = destination["on_failure"]
        return {
            "retries": spec["async"]["retries"],
            "max_age": spec["async"]["max_age"],
            "on_failure": _terraform_queue(failure["destination"]),
        }

    def dead_letters(spec):
        if "dead_letter_config" in function:
            return _terraform_queue(function["dead_letter_config"][0]["target_arn"])
        (dynamic,) = [d["dead_letter_config"] for d in function["dynamic"] if "dead_letter_config" in d]
        # the one form read here: a dead-letter queue exactly when there is no on-failure destination
        assert dynamic["for_each"] == "${each.value.async == null ? [aws_sqs_queue.failed_events.arn] : []}", dynamic
        return "failed-events" if spec["async"] is None else None

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
        env = {*locals_["common_environment"], *spec["environment"]}
        system[name] = {
            "binary": spec["binary"],
            "role": spec["environment"].get("SPENDGUARD_ROLE"),
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
            "dead_letters": dead_letters(spec),
            "reserved_concurrency": reserved(spec["reserved_concurrency"]),
            "async": asynchronous(spec),
        }
    return system


def _terraform_queue(reference):
    return {"${aws_sqs_queue.failed_events.arn}": "failed-events"}[reference]


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


# ---------------------------------------------------------------- the alarms through fan-out

ANY_CHANNEL = "when any operator channel is given"


def _sam_when(t, condition):
    """What a SAM Condition name means for the operator route, in words both sides share."""
    if condition is None:
        return "always"
    expected = {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "OperatorChannels"}]}, ""]}]}
    return ANY_CHANNEL if t["Conditions"].get(condition) == expected else repr(t["Conditions"].get(condition))


def _sam_operator_value(t, value):
    if isinstance(value, dict) and "Fn::If" in value:
        condition, then, otherwise = value["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}, value
        return (_sam_when(t, condition), _sam_operator_value(t, then))
    if value == {"Ref": "OperatorTopic"}:
        return "operator topic"
    if value == {"Fn::Join": [",", {"Ref": "OperatorChannels"}]}:
        return "operator_channels, comma-separated"
    functions = sam_function_names(t)
    if isinstance(value, dict) and value.get("Fn::GetAtt", [None])[0] in functions:
        return (functions[value["Fn::GetAtt"][0]], value["Fn::GetAtt"][1])
    if isinstance(value, dict) and value.get("Ref") in functions:
        return (functions[value["Ref"]], "name")
    if isinstance(value, dict) and value.get("Fn::GetAtt", [None])[0] in QUEUES:
        return QUEUES[value["Fn::GetAtt"][0]]
    return value


def sam_operator_route(t):
    """The input, subscription, invoke permission and fan-out environment of the route."""
    parameter = t["Parameters"]["OperatorChannels"]
    subscription = t["Resources"]["OperatorFanoutSubscription"]
    permission = t["Resources"]["OperatorFanoutPermission"]
    p, q = subscription["Properties"], permission["Properties"]
    env = t["Resources"]["AlertFanoutFunction"]["Properties"]["Environment"]["Variables"]
    return {
        "input": (_snake("OperatorChannels"), {"CommaDelimitedList": "list"}.get(parameter["Type"], parameter["Type"]),
                  [] if parameter["Default"] == "" else parameter["Default"].split(",")),
        "subscription": (_sam_when(t, subscription.get("Condition")), _sam_operator_value(t, p["TopicArn"]), p["Protocol"],
                         _sam_operator_value(t, p["Endpoint"]),
                         _sam_operator_value(t, p.get("RedrivePolicy", {}).get("deadLetterTargetArn"))),
        "permission": (_sam_when(t, permission.get("Condition")), _sam_operator_value(t, q["FunctionName"]), q["Action"],
                       q["Principal"], _sam_operator_value(t, q["SourceArn"])),
        "environment": {k: _sam_operator_value(t, v) for k, v in env.items() if k.startswith("SPENDGUARD_OPERATOR_")},
    }


def _terraform_operator_value(value, locals_):
    if value is None:
        return None
    conditional = re.fullmatch(r"\$\{local\.operator_route \? (.+) : (null|0)\}", value)
    if conditional:
        when = ANY_CHANNEL if locals_["operator_route"] == "${length(var.operator_channels) > 0}" else locals_["operator_route"]
        inner = conditional.group(1)
        return when if inner == "1" else (when, _terraform_operator_value("${" + inner + "}", locals_))
    return {
        "${aws_sns_topic.operator.arn}": "operator topic",
        '${join(",", var.operator_channels)}': "operator_channels, comma-separated",
        '${aws_lambda_function.function["alert-fanout"].arn}': ("alert-fanout", "Arn"),
        '${aws_lambda_function.function["alert-fanout"].function_name}': ("alert-fanout", "name"),
        "${jsonencode({deadLetterTargetArn = aws_sqs_queue.failed_events.arn})}": "failed-events",
    }.get(value, value)


def terraform_operator_route(texts):
    locals_, resources = _terraform_parts(texts)
    variable = next(spec for text in texts.values() for block in hcl2.loads(text).get("variable", [])
                    for name, spec in block.items() if _unquote(name) == "operator_channels")
    subscription = resources[("aws_sns_topic_subscription", "operator_fanout")]
    permission = resources[("aws_lambda_permission", "operator_fanout")]
    value = lambda v: _terraform_operator_value(v, locals_)  # noqa: E731
    env = locals_["functions"]["alert-fanout"]["environment"]
    return {
        "input": ("operator_channels", {"${list(string)}": "list"}.get(variable["type"], variable["type"]),
                  _unquote(variable["default"])),
        "subscription": (value(subscription.get("count")), value(subscription["topic_arn"]), subscription["protocol"],
                         value(subscription["endpoint"]), value(subscription.get("redrive_policy"))),
        "permission": (value(permission.get("count")), value(permission["function_name"]), permission["action"],
                       permission["principal"], value(permission["source_arn"])),
        "environment": {k: value(v) for k, v in env.items() if k.startswith("SPENDGUARD_OPERATOR_")},
    }


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


# ---------------------------------------------------------------- alarms

def _sam_alarm_name(value):
    return re.fullmatch(r"\$\{AWS::StackName\}-(.+)", value["Fn::Sub"]).group(1)


def _sam_dimension(functions, value):
    if "Ref" in value and value["Ref"] in functions:
        return functions[value["Ref"]]
    if "Fn::GetAtt" in value and value["Fn::GetAtt"] == ["FailedEventsQueue", "QueueName"]:
        return "failed-events"
    return repr(value)


def _sam_topics(values):
    return sorted({"OperatorTopic": "operator"}.get(v.get("Ref"), repr(v)) for v in values or [])


def sam_alarms(t):
    """Every alarm by name (without the stack name): what it watches and whom it tells."""
    functions = sam_function_names(t)
    alarms = {}
    for resource in t["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        p = resource["Properties"]
        if "Metrics" in p:  # metric math: the queries are compared by the silent-alarm test
            watched = ("metric math",)
        else:
            (dimension,) = p["Dimensions"]
            watched = (p["Namespace"], p["MetricName"], dimension["Name"], _sam_dimension(functions, dimension["Value"]),
                       p["Statistic"], p["Period"])
        alarms[_sam_alarm_name(p["AlarmName"])] = {
            "watches": watched,
            "description": p["AlarmDescription"],
            "evaluation_periods": p["EvaluationPeriods"],
            "threshold": p["Threshold"],
            "comparison": p["ComparisonOperator"],
            "missing_data": p["TreatMissingData"],
            "alarm_actions": _sam_topics(p.get("AlarmActions")),
            "ok_actions": _sam_topics(p.get("OKActions")),
        }
    return alarms


def _terraform_value(value, key, spec):
    """A value of a per-function alarm (key None: of a single alarm) with `${each.key}`,
    `[each.key]` and a whole `${each.value.a.b}` resolved."""
    if not isinstance(value, str) or key is None:
        return value
    whole = re.fullmatch(r"\$\{each\.value\.([\w.]+)\}", value)
    if whole:
        for part in whole.group(1).split("."):
            spec = spec[part]
        return spec
    return value.replace("${each.key}", key).replace("[each.key]", f'["{key}"]')


def _terraform_dimension(value):
    each = re.fullmatch(r'\$\{aws_lambda_function\.function\["([\w-]+)"\]\.function_name\}', value)
    if each:
        return each.group(1)
    return {"${aws_sqs_queue.failed_events.name}": "failed-events"}.get(value, value)


def _terraform_topics(values):
    return sorted({"${aws_sns_topic.operator.arn}": "operator"}.get(v, v) for v in values or [])


def terraform_alarms(texts):
    locals_, resources = _terraform_parts(texts)
    alarms = {}
    for (kind, _), body in resources.items():
        if kind != "aws_cloudwatch_metric_alarm":
            continue
        if "for_each" in body:
            assert body["for_each"] == "${local.functions}", body["for_each"]
            instances = list(locals_["functions"].items())
        else:
            instances = [(None, {})]
        for key, spec in instances:
            def value(field):
                return _terraform_value(body[field], key, spec)

            if "metric_query" in body:
                watched = ("metric math",)
            else:
                ((dimension, dimension_value),) = body["dimensions"].items()
                watched = (value("namespace"), value("metric_name"), dimension,
                           _terraform_dimension(_terraform_value(dimension_value, key, spec)),
                           value("statistic"), value("period"))
            name = re.fullmatch(r"\$\{var\.name\}-(.+)", value("alarm_name")).group(1)
            alarms[name] = {
                "watches": watched,
                "description": value("alarm_description"),
                "evaluation_periods": body["evaluation_periods"],
                "threshold": body["threshold"],
                "comparison": body["comparison_operator"],
                "missing_data": body["treat_missing_data"],
                "alarm_actions": _terraform_topics(body.get("alarm_actions")),
                "ok_actions": _terraform_topics(body.get("ok_actions")),
            }
    return alarms


def alarm_differences(sam, tf):
    out = []
    for name in sorted(set(sam) | set(tf)):
        if name not in sam or name not in tf:
            out.append(f"alarm {name}: only in {'terraform' if name in tf else 'template.yaml'}")
            continue
        for key in sorted(sam[name]):
            if sam[name][key] != tf[name].get(key):
                out.append(f"alarm {name}: {key}: template.yaml {sam[name][key]!r} != terraform {tf[name].get(key)!r}")
    return out


# ---------------------------------------------------------------- who may publish alerts

def sam_alerts_topic_policy(t):
    """(effect, principal, action, condition operator, condition key, publishing functions)."""
    functions = sam_function_names(t)
    roles = {f"{logical}Role": name for logical, name in functions.items()}
    p = t["Resources"]["AlertsTopicPolicy"]["Properties"]
    assert p["Topics"] == [{"Ref": "AlertsTopic"}], p["Topics"]
    (statement,) = p["PolicyDocument"]["Statement"]
    assert statement["Resource"] == {"Ref": "AlertsTopic"}, statement["Resource"]
    ((operator, condition),) = statement["Condition"].items()
    ((key, arns),) = condition.items()
    publishers = []
    for arn in arns:
        role, attribute = arn["Fn::GetAtt"]
        assert attribute == "Arn", arn
        publishers.append(roles[role])
    return (statement["Effect"], statement["Principal"], statement["Action"], operator, key, sorted(publishers))


def terraform_alerts_topic_policy(texts):
    locals_, resources = _terraform_parts(texts)
    body = resources[("aws_sns_topic_policy", "alerts")]
    assert body["arn"] == "${aws_sns_topic.alerts.arn}", body["arn"]
    policy = body["policy"]
    field = lambda name: re.search(name + r' = "([^"]+)"', policy).group(1)  # noqa: E731
    condition = re.search(r'Condition = \{(\w+) = \{"([\w:]+)" = \[for f in local\.alert_publishers : aws_iam_role\.function\[f\]\.arn\]\}\}', policy)
    assert condition, policy
    assert "Resource = aws_sns_topic.alerts.arn" in policy, policy
    assert policy.count("Sid =") == 1, policy
    return (field("Effect"), field("Principal"), field("Action"), condition.group(1), condition.group(2),
            sorted(locals_["alert_publishers"]))



# ---------------------------------------------------------------- the shutdown's IAM statements

# key-guard's statements that change opted-in resources (docs/shutdown.md, findings #8, #10)
SHUTDOWN_SIDS = ("ShutdownOptedIn", "ShutdownDenyRoles", "SuspendScaling")
DENY_ALL = "arn:${partition}:iam::aws:policy/AWSDenyAll"


def _normal(value):
    """An IAM value in one spelling for both: !Sub unwrapped, ${partition}, ${account}, ${table}."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        value = value["Fn::Sub"]
    if value in ({"Fn::GetAtt": ["StateTable", "Arn"]}, "${aws_dynamodb_table.state.arn}"):
        return "${table}"
    if isinstance(value, str):
        for old, new in (("${AWS::Partition}", "${partition}"), ("${local.partition}", "${partition}"),
                         ("${AWS::AccountId}", "${account}"), ("${local.account}", "${account}")):
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _statement(actions, resource, condition):
    resources = resource if isinstance(resource, list) else [resource]
    return {"Action": sorted(actions), "Resource": sorted(_normal(resources)), "Condition": _normal(condition)}


def sam_statements(t, function="KeyGuardFunction", sids=SHUTDOWN_SIDS):
    policy = t["Resources"][function]["Properties"]["Policies"][0]["Statement"]
    found = {}
    for statement in map(_present, policy):
        if isinstance(statement, dict) and statement.get("Sid") in sids:
            found[statement["Sid"]] = _statement(statement["Action"], statement["Resource"], statement.get("Condition"))
    return found


def terraform_statements(texts, function="key-guard", sids=SHUTDOWN_SIDS):
    locals_, _ = _terraform_parts(texts)
    return {
        sid: _statement(actions, locals_["shared_resources"][sid], locals_["conditions"].get(sid))
        for sid, actions in locals_["permissions"][function].items()
        if sid in sids
    }


def _grants(pattern, action):
    """Whether an IAM action pattern (wildcards, any case) covers `action`."""
    regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, action.lower()) is not None


def granting(system, action):
    """(function, statement) pairs of a system (sam_system, terraform_system) granting `action`."""
    return sorted(
        (name, sid)
        for name, f in system.items()
        for sid, actions in f["statements"].items()
        if any(_grants(a, action) for a in actions)
    )


class Parity(unittest.TestCase):
    def test_template_and_terraform_describe_the_same_functions(self):
        sam, tf = sam_system(template()), terraform_system(terraform_texts())
        self.assertEqual(
            sorted(sam),
            ["alert-fanout", "budget-check", "budget-webhook", "daily-aggregate", "key-guard", "usage-rollup"],
        )
        self.assertEqual(differences(sam, tf), [])
        # five binaries: the roll-up of pending usage runs budget-check's, in its roll-up role
        self.assertEqual({name: f["binary"] for name, f in sam.items() if f["binary"] != name}, {"usage-rollup": "budget-check"})
        self.assertEqual({name: f["role"] for name, f in sam.items() if f["role"] is not None}, {"usage-rollup": "roll-up"})
        for name, f in sam.items():
            self.assertEqual(f["architectures"], ["arm64"], name)
            self.assertEqual(f["runtime"], "provided.al2023", name)
            # failed events go to the queue once: a dead-letter queue or an on-failure destination
            on_failure = f["async"] and f["async"]["on_failure"]
            self.assertEqual(sorted(filter(None, [f["dead_letters"], on_failure])), ["failed-events"], name)

    def test_the_public_webhook_holds_no_admin_key_and_no_cost_explorer(self):
        # review finding #7: the internet-facing function evaluates only its own signals
        for system in (sam_system(template()), terraform_system(terraform_texts())):
            webhook = system["budget-webhook"]
            self.assertNotIn("AdminKeys", webhook["statements"])
            self.assertEqual(
                [f for f, _ in granting(system, "ce:GetCostAndUsage") if f == "budget-webhook"], []
            )
            for variable in ("SPENDGUARD_OPENAI_ADMIN_KEY_ARN", "SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN", "SPENDGUARD_COST_EXPLORER"):
                self.assertNotIn(variable, webhook["environment"])
        # and the test can fail: the statement put back is seen
        text = (ROOT / "template.yaml").read_text()
        marker = "            - Sid: ReadBudgets\n              Effect: Allow\n              Action: [budgets:ViewBudget]\n              Resource: !Sub \"arn:${AWS::Partition}:budgets::${AWS::AccountId}:budget/*\"\n      Events:"
        self.assertIn(marker, text)
        planted = text.replace(marker, "            - Sid: AdminKeys\n              Effect: Allow\n              Action: [secretsmanager:GetSecretValue]\n              Resource: !Ref AWS::NoValue\n" + marker)
        self.assertIn("AdminKeys", sam_system(template(planted))["budget-webhook"]["statements"])

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
        marker = '"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]'
        webhook = texts["main.tf"].index('"budget-webhook" = {')
        at = texts["main.tf"].index(marker, webhook)
        texts["main.tf"] = texts["main.tf"][:at] + '"dynamodb:BatchWriteItem"]' + texts["main.tf"][at + len(marker):]
        found = differences(sam_system(template()), terraform_system(texts))
        self.assertEqual(
            found,
            ["budget-webhook: statement WriteOwnItems: only in template.yaml ['dynamodb:DeleteItem'], only in terraform []"],
        )

    def test_the_webhook_writes_only_its_own_items_in_both(self):
        # finding #7: the internet-facing function may not write budgets, keys, kill switches,
        # key actions or deliveries; both deployments say so with the same condition
        sids = {"ReadState", "WriteOwnItems", "AppendAudit"}
        sam = sam_statements(template(), "BudgetWebhookFunction", sids)
        self.assertEqual(sam, terraform_statements(terraform_texts(), "budget-webhook", sids))
        self.assertEqual(sam["ReadState"]["Action"], ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query"])
        condition = sam["WriteOwnItems"]["Condition"]
        self.assertEqual(condition["Null"], {"dynamodb:LeadingKeys": "false"})
        prefixes = condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        for forbidden in ("BUDGETS", "KEYS", "KILL#", "KILL_INDEX", "KEYACTION#", "DELIVERY#", "DIGEST#", "SUMMARY#", "CACHE#",
                          "MSG#security-ack#", "AUDIT#"):
            self.assertFalse(any(_grants(p, forbidden + "x") or _grants(p, forbidden) for p in prefixes), forbidden)
        # audit entries: added only, never changed or deleted
        self.assertEqual(sam["AppendAudit"]["Action"], ["dynamodb:PutItem"])
        self.assertEqual(sam["AppendAudit"]["Condition"]["ForAllValues:StringLike"], {"dynamodb:LeadingKeys": ["AUDIT#*"]})
        # no other statement of the webhook touches the table
        for system in (sam_system(template()), terraform_system(terraform_texts())):
            for action, sids in (("dynamodb:PutItem", ["AppendAudit", "WriteOwnItems"]), ("dynamodb:UpdateItem", ["WriteOwnItems"]),
                                 ("dynamodb:DeleteItem", ["WriteOwnItems"]), ("dynamodb:BatchWriteItem", ["WriteOwnItems"])):
                self.assertEqual([g for g in granting(system, action) if g[0] == "budget-webhook"], [("budget-webhook", s) for s in sids])

    def test_a_webhook_leading_key_changed_on_one_side_is_caught(self):
        texts = terraform_texts()
        marker = '"HOLDS#*"]'
        self.assertIn(marker, texts["main.tf"])
        texts["main.tf"] = texts["main.tf"].replace(marker, '"HOLDS#*", "KILL#*"]')
        sids = {"WriteOwnItems"}
        self.assertNotEqual(
            sam_statements(template(), "BudgetWebhookFunction", sids),
            terraform_statements(texts, "budget-webhook", sids),
        )

    def test_a_changed_timeout_or_variable_is_caught(self):
        texts = terraform_texts()
        texts["main.tf"] = re.sub(r"timeout( +)= 900", r"timeout\1= 300", texts["main.tf"], count=1)
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
        # one source: the module's own file (a module must not read outside itself), which
        # template.yaml inlines (CloudFormation cannot read a file)
        self.assertEqual(json.loads(body), json.loads((MODULE / "dashboard.json").read_text()))
        self.assertIn('file("${path.module}/dashboard.json")', terraform_texts()["functions.tf"])
        self.assertNotIn("../", "".join(terraform_texts().values()), "the module reads only its own files")

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

    def test_the_shutdown_statements_are_the_same_in_both_and_attach_only_aws_deny_all(self):
        sam, tf = sam_statements(template()), terraform_statements(terraform_texts())
        self.assertEqual(sam, tf)
        tagged = {"Null": {"aws:ResourceTag/spendguard:shutdown": "false"}}
        self.assertEqual(
            sam["ShutdownDenyRoles"],
            {
                "Action": ["iam:AttachRolePolicy", "iam:DetachRolePolicy"],
                "Resource": ["arn:${partition}:iam::${account}:role/*"],
                "Condition": {"ArnEquals": {"iam:PolicyARN": DENY_ALL}, **tagged},
            },
        )
        self.assertEqual(sam["ShutdownOptedIn"]["Condition"], tagged)
        self.assertIn("iam:ListAttachedRolePolicies", sam["ShutdownOptedIn"]["Action"])
        # attaching or detaching a policy is granted nowhere else, and never without the ARN
        for system in (sam_system(template()), terraform_system(terraform_texts())):
            for action in ("iam:AttachRolePolicy", "iam:DetachRolePolicy"):
                self.assertEqual(granting(system, action), [("key-guard", "ShutdownDenyRoles")], action)

    def test_a_shutdown_statement_changed_on_one_side_is_caught(self):
        texts = terraform_texts()
        marker = '"arn:${local.partition}:iam::aws:policy/AWSDenyAll"'
        self.assertIn(marker, texts["main.tf"])
        texts["main.tf"] = texts["main.tf"].replace(marker, '"arn:${local.partition}:iam::aws:policy/AdministratorAccess"')
        self.assertNotEqual(sam_statements(template()), terraform_statements(texts))
        text = (ROOT / "template.yaml").read_text()
        marker = '"iam:PolicyARN": !Sub arn:${AWS::Partition}:iam::aws:policy/AWSDenyAll'
        self.assertIn(marker, text)
        modified = template(text.replace(marker, '"iam:PolicyARN": !Sub arn:${AWS::Partition}:iam::aws:policy/*'))
        self.assertNotEqual(sam_statements(modified), terraform_statements(terraform_texts()))
        marker = "Resource: !Sub arn:${AWS::Partition}:iam::${AWS::AccountId}:role/*\n              Condition:\n                ArnEquals"
        self.assertIn(marker, text)
        modified = template(text.replace(marker, 'Resource: "*"\n              Condition:\n                ArnEquals'))
        self.assertNotEqual(sam_statements(modified), terraform_statements(terraform_texts()))

    def test_no_role_may_put_an_inline_role_policy(self):
        # PutRolePolicy takes any document: a privilege-escalation primitive (finding #8)
        for system in (sam_system(template()), terraform_system(terraform_texts())):
            self.assertEqual(granting(system, "iam:PutRolePolicy"), [])
            self.assertEqual(granting(system, "iam:DeleteRolePolicy"), [])
        self.assertEqual(_grants("iam:Put*", "iam:PutRolePolicy"), True)
        self.assertEqual(_grants("*", "iam:PutRolePolicy"), True)
        self.assertEqual(_grants("iam:PutUserPolicy", "iam:PutRolePolicy"), False)
        text = (ROOT / "template.yaml").read_text()
        marker = "ec2:StopInstances, ec2:StartInstances, iam:ListAttachedRolePolicies"
        self.assertIn(marker, text)
        planted = sam_system(template(text.replace(marker, "ec2:StopInstances, ec2:StartInstances, iam:Put*, iam:ListAttachedRolePolicies")))
        self.assertEqual(granting(planted, "iam:PutRolePolicy"), [("key-guard", "ShutdownOptedIn")])

    def test_aws_budgets_may_publish_only_for_this_account(self):
        t = template()
        statement = t["Resources"]["BudgetsTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        self.assertEqual(statement["Principal"], {"Service": "budgets.amazonaws.com"})
        self.assertIn("aws:SourceAccount", statement["Condition"]["StringEquals"])
        self.assertIn("aws:SourceArn", statement["Condition"]["ArnLike"])


    # ------------------------------------------------------------ capacity

    def test_reservations_are_the_same_inputs_with_the_recommended_defaults(self):
        sam, tf = sam_system(template()), terraform_system(terraform_texts())
        reserved = {name: f["reserved_concurrency"] for name, f in sam.items()}
        self.assertEqual(reserved, {name: f["reserved_concurrency"] for name, f in tf.items()})
        self.assertEqual(
            reserved,
            {
                "key-guard": ("key_guard_reserved_concurrency", 5),
                "budget-check": ("budget_check_reserved_concurrency", 2),
                "budget-webhook": ("webhook_reserved_concurrency", 50),
                "alert-fanout": None,
                "daily-aggregate": None,
                "usage-rollup": None,
            },
        )
        # 0 reserves nothing on both sides (Lambda's "no reservation" is -1 in terraform)
        self.assertIn(
            "reserved_concurrent_executions = coalesce(each.value.reserved_concurrency, 0) > 0 ? each.value.reserved_concurrency : -1",
            terraform_texts()["functions.tf"],
        )
        t = template()
        for variable, _ in filter(None, reserved.values()):
            parameter = "".join(w.capitalize() for w in variable.split("_"))
            self.assertEqual(t["Parameters"][parameter]["MinValue"], 0, parameter)

    def test_a_changed_reservation_is_caught(self):
        texts = terraform_texts()
        marker = "default     = 5\n"
        at = texts["variables.tf"].index(marker, texts["variables.tf"].index('variable "key_guard_reserved_concurrency"'))
        texts["variables.tf"] = texts["variables.tf"][:at] + "default     = 10\n" + texts["variables.tf"][at + len(marker):]
        self.assertEqual(
            differences(sam_system(template()), terraform_system(texts)),
            ["key-guard: reserved_concurrency: template.yaml ('key_guard_reserved_concurrency', 5) != terraform ('key_guard_reserved_concurrency', 10)"],
        )

    def test_asynchronous_invocations_retry_and_fail_into_the_queue_alike(self):
        sam, tf = sam_system(template()), terraform_system(terraform_texts())
        configs = {name: f["async"] for name, f in sam.items()}
        self.assertEqual(configs, {name: f["async"] for name, f in tf.items()})
        self.assertEqual(
            configs,
            {
                "key-guard": {"retries": 2, "max_age": 3600, "on_failure": "failed-events"},
                "alert-fanout": {"retries": 2, "max_age": 3600, "on_failure": "failed-events"},
                "budget-check": {"retries": 1, "max_age": 300, "on_failure": "failed-events"},
                "budget-webhook": None,
                "daily-aggregate": None,
                "usage-rollup": None,
            },
        )
        # Lambda sends failed events with the function's own role: every role may (terraform
        # says so; SAM adds the statement for DeadLetterQueue and for an SQS OnFailure itself)
        self.assertIn(
            '{ Sid = "DeadLetters", Effect = "Allow", Action = ["sqs:SendMessage"], Resource = aws_sqs_queue.failed_events.arn }',
            terraform_texts()["functions.tf"],
        )

    def test_a_changed_event_age_is_caught(self):
        texts = terraform_texts()
        texts["main.tf"] = texts["main.tf"].replace("{ retries = 2, max_age = 3600 }", "{ retries = 2, max_age = 21600 }", 1)
        self.assertEqual(
            differences(sam_system(template()), terraform_system(texts)),
            ["alert-fanout: async: template.yaml {'retries': 2, 'max_age': 3600, 'on_failure': 'failed-events'}"
             " != terraform {'retries': 2, 'max_age': 21600, 'on_failure': 'failed-events'}"],
        )

    # ------------------------------------------------------------ alarms

    def test_both_deploy_the_same_alarms_with_the_same_names(self):
        sam, tf = sam_alarms(template()), terraform_alarms(terraform_texts())
        self.assertEqual(alarm_differences(sam, tf), [])
        functions = ["alert-fanout", "budget-check", "budget-webhook", "daily-aggregate", "key-guard", "usage-rollup"]
        self.assertEqual(
            sorted(sam),
            sorted(
                ["failed-events", "budget-check-silent", "budget-webhook-5xx", "pending-usage-lag", "pending-usage-age"]
                + [f"{f}-errors" for f in functions]
                + [f"{f}-throttles" for f in functions]
            ),
        )
        for name, alarm in sam.items():
            self.assertEqual(alarm["alarm_actions"], ["operator"], name)
            self.assertEqual(alarm["ok_actions"], ["operator"], name)
        for f in functions:
            self.assertEqual(sam[f"{f}-throttles"]["watches"], ("AWS/Lambda", "Throttles", "FunctionName", f, "Sum", 300))
            self.assertEqual((sam[f"{f}-throttles"]["comparison"], sam[f"{f}-throttles"]["threshold"]), ("GreaterThanThreshold", 0))
        self.assertEqual(sam["budget-webhook-5xx"]["watches"], ("AWS/Lambda", "Url5xxCount", "FunctionName", "budget-webhook", "Sum", 300))
        # ADR 031: the roll-up of pending usage lags (the stream's oldest record, in ms)
        self.assertEqual(sam["pending-usage-lag"]["watches"], ("AWS/Lambda", "IteratorAge", "FunctionName", "usage-rollup", "Maximum", 300))
        self.assertEqual((sam["pending-usage-lag"]["comparison"], sam["pending-usage-lag"]["threshold"]), ("GreaterThanThreshold", 300000))
        # review S4: how long the oldest pending item the check found had waited (budget-check's
        # EMF metric): over 2 minutes at every check of an hour (the least of the hour's
        # datapoints: one per check at any interval from 1 to 60 minutes; three periods of 5
        # minutes never all held a datapoint at an interval over 5); a check that does not run
        # is the silent alarm's, so missing data is not breaching
        for alarms in (sam, tf):
            age = alarms["pending-usage-age"]
            self.assertEqual(age["watches"], ("spendguard", "PendingUsageAge", "FunctionName", "budget-check", "Minimum", 3600))
            self.assertEqual(
                (age["comparison"], age["threshold"], age["evaluation_periods"], age["missing_data"]),
                ("GreaterThanThreshold", 120, 1, "notBreaching"),
            )
            self.assertIn("docs/deploy.md", age["description"])

    def test_a_renamed_alarm_or_one_without_ok_actions_is_caught(self):
        texts = terraform_texts()
        texts["functions.tf"] = texts["functions.tf"].replace('"${var.name}-budget-webhook-5xx"', '"${var.name}-webhook-5xx"', 1)
        found = alarm_differences(sam_alarms(template()), terraform_alarms(texts))
        self.assertEqual(found, ["alarm budget-webhook-5xx: only in template.yaml", "alarm webhook-5xx: only in terraform"])
        text = (ROOT / "template.yaml").read_text()
        marker = "      OKActions: [!Ref OperatorTopic]\n"
        at = text.index(marker, text.index("  KeyGuardThrottlesAlarm:"))
        modified = text[:at] + text[at + len(marker):]
        found = alarm_differences(sam_alarms(template(modified)), terraform_alarms(terraform_texts()))
        self.assertEqual(found, ["alarm key-guard-throttles: ok_actions: template.yaml [] != terraform ['operator']"])

    def test_an_operator_email_is_subscribed_to_the_alarms_when_given(self):
        t = template()
        self.assertEqual(t["Parameters"]["OperatorEmail"]["Default"], "")
        self.assertEqual(t["Conditions"]["HasOperatorEmail"], {"Fn::Not": [{"Fn::Equals": [{"Ref": "OperatorEmail"}, ""]}]})
        subscription = t["Resources"]["OperatorEmailSubscription"]
        self.assertEqual(subscription["Condition"], "HasOperatorEmail")
        self.assertEqual(
            subscription["Properties"],
            {"TopicArn": {"Ref": "OperatorTopic"}, "Protocol": "email", "Endpoint": {"Ref": "OperatorEmail"}},
        )
        texts = terraform_texts()
        self.assertIsNone(_variable_defaults(texts.values())["operator_email"])
        _, resources = _terraform_parts(texts)
        body = dict(resources[("aws_sns_topic_subscription", "operator_email")])
        body.pop("__is_block__", None)
        self.assertEqual(
            body,
            {"count": "${var.operator_email == null ? 0 : 1}", "topic_arn": "${aws_sns_topic.operator.arn}",
             "protocol": "email", "endpoint": "${var.operator_email}"},
        )

    def test_the_alarms_reach_fan_out_alike_when_operator_channels_are_given(self):
        sam, tf = sam_operator_route(template()), terraform_operator_route(terraform_texts())
        self.assertEqual(sam, tf)
        self.assertEqual(
            sam,
            {
                "input": ("operator_channels", "list", []),
                "subscription": (ANY_CHANNEL, "operator topic", "lambda", ("alert-fanout", "Arn"), "failed-events"),
                "permission": (ANY_CHANNEL, ("alert-fanout", "name"), "lambda:InvokeFunction", "sns.amazonaws.com",
                               "operator topic"),
                "environment": {
                    "SPENDGUARD_OPERATOR_TOPIC_ARN": (ANY_CHANNEL, "operator topic"),
                    "SPENDGUARD_OPERATOR_CHANNELS": (ANY_CHANNEL, "operator_channels, comma-separated"),
                },
            },
        )
        # nothing else listens to the operator topic: key-guard acts only on the alerts topic
        for name, function in sam_system(template()).items():
            self.assertNotIn("operator", [s[0] for s in function["subscriptions"]], name)

    def test_an_operator_route_changed_on_one_side_is_caught(self):
        texts = terraform_texts()
        marker = 'source_arn    = aws_sns_topic.operator.arn'
        self.assertIn(marker, texts["main.tf"])
        texts["main.tf"] = texts["main.tf"].replace(marker, 'source_arn    = aws_sns_topic.alerts.arn')
        self.assertNotEqual(sam_operator_route(template()), terraform_operator_route(texts))
        # a subscription without its condition would subscribe fan-out in every deployment
        text = (ROOT / "template.yaml").read_text()
        marker = "  OperatorFanoutSubscription:\n    Type: AWS::SNS::Subscription\n    Condition: HasOperatorChannels\n"
        self.assertIn(marker, text)
        modified = template(text.replace(marker, "  OperatorFanoutSubscription:\n    Type: AWS::SNS::Subscription\n"))
        self.assertEqual(sam_operator_route(modified)["subscription"][0], "always")
        self.assertNotEqual(sam_operator_route(modified), terraform_operator_route(terraform_texts()))
        # the channels variable missing from fan-out's environment on one side
        marker = '        SPENDGUARD_OPERATOR_CHANNELS         = local.operator_route ? join(",", var.operator_channels) : null\n'
        texts = terraform_texts()
        self.assertIn(marker, texts["main.tf"])
        texts["main.tf"] = texts["main.tf"].replace(marker, "")
        self.assertEqual(
            differences(sam_system(template()), terraform_system(texts)),
            ["alert-fanout: environment: template.yaml ['SPENDGUARD_ALERT_SIGNING_KEY_ARN', 'SPENDGUARD_DELIVERY_DEADLINE_SECONDS',"
             " 'SPENDGUARD_OPERATOR_CHANNELS', 'SPENDGUARD_OPERATOR_TOPIC_ARN', 'SPENDGUARD_TABLE']"
             " != terraform ['SPENDGUARD_ALERT_SIGNING_KEY_ARN', 'SPENDGUARD_DELIVERY_DEADLINE_SECONDS',"
             " 'SPENDGUARD_OPERATOR_TOPIC_ARN', 'SPENDGUARD_TABLE']"],
        )

    def test_the_operator_topic_is_one_cloudwatch_can_publish_to(self):
        # CloudWatch alarms cannot use the AWS-managed SNS key: an alarm on such a topic tells nobody
        self.assertNotIn("KmsMasterKeyId", template()["Resources"]["OperatorTopic"]["Properties"])
        _, resources = _terraform_parts(terraform_texts())
        self.assertNotIn("kms_master_key_id", resources[("aws_sns_topic", "operator")])

    # ------------------------------------------------------------ who may order a kill

    def test_only_spendguards_publishers_may_publish_alerts(self):
        t = template()
        sam, tf = sam_alerts_topic_policy(t), terraform_alerts_topic_policy(terraform_texts())
        self.assertEqual(sam, tf)
        publishers = sorted(name for name, f in sam_system(t).items() if "PublishAlerts" in f["statements"])
        self.assertEqual(
            sam,
            ("Deny", "*", "sns:Publish", "ArnNotEquals", "aws:PrincipalArn", publishers),
        )
        self.assertEqual(publishers, ["budget-check", "budget-webhook", "daily-aggregate", "key-guard"])

    def test_a_publisher_missing_from_the_topic_policy_is_caught(self):
        texts = terraform_texts()
        texts["main.tf"] = texts["main.tf"].replace(', "daily-aggregate"]', "]", 1)
        self.assertNotEqual(sam_alerts_topic_policy(template()), terraform_alerts_topic_policy(texts))

    def test_every_function_but_the_roll_up_reads_the_alert_signing_key_and_only_it(self):
        t = template()
        secret = t["Resources"]["AlertSigningKey"]
        self.assertEqual(secret["Type"], "AWS::SecretsManager::Secret")
        self.assertEqual(secret["Properties"]["GenerateSecretString"], {"ExcludePunctuation": True, "PasswordLength": 64})
        self.assertEqual(t["Globals"]["Function"]["Environment"]["Variables"]["SPENDGUARD_ALERT_SIGNING_KEY_ARN"], {"Ref": "AlertSigningKey"})
        for logical, resource in t["Resources"].items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            statements = [_present(s) for s in resource["Properties"]["Policies"][0]["Statement"]]
            signing = [s for s in statements if s["Sid"] == "AlertSigningKey"]
            # the roll-up neither publishes nor receives alerts: it never reads the key
            expected = [] if logical == "UsageRollupFunction" else [
                {"Sid": "AlertSigningKey", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": {"Ref": "AlertSigningKey"}}]
            self.assertEqual(signing, expected, logical)
            for s in statements:  # no other statement names the key
                if s["Sid"] != "AlertSigningKey":
                    self.assertNotIn("AlertSigningKey", json.dumps(s), logical)

        texts = terraform_texts()
        locals_, resources = _terraform_parts(texts)
        self.assertEqual(locals_["common_environment"]["SPENDGUARD_ALERT_SIGNING_KEY_ARN"], "${aws_secretsmanager_secret.alert_signing.arn}")
        self.assertEqual(locals_["shared_resources"]["AlertSigningKey"], ["${aws_secretsmanager_secret.alert_signing.arn}"])
        for name, permissions in locals_["permissions"].items():
            self.assertEqual(permissions.get("AlertSigningKey"), None if name == "usage-rollup" else ["secretsmanager:GetSecretValue"], name)
        # generated by Secrets Manager, written once and never into state
        (ephemeral,) = hcl2.loads(texts["main.tf"])["ephemeral"]
        password = _unquote(ephemeral)["aws_secretsmanager_random_password"]["alert_signing"]
        self.assertEqual((password["password_length"], password["exclude_punctuation"]), (64, True))
        version = resources[("aws_secretsmanager_secret_version", "alert_signing")]
        self.assertEqual(version["secret_string_wo"], "${ephemeral.aws_secretsmanager_random_password.alert_signing.random_password}")
        self.assertEqual(version["secret_string_wo_version"], 1)
        self.assertNotIn("secret_string", version)

    def test_a_function_that_cannot_read_the_signing_key_is_caught(self):
        texts = terraform_texts()
        marker = '      AlertSigningKey = ["secretsmanager:GetSecretValue"]\n'
        at = texts["main.tf"].index(marker, texts["main.tf"].index('"daily-aggregate" = {'))
        texts["main.tf"] = texts["main.tf"][:at] + texts["main.tf"][at + len(marker):]
        self.assertEqual(
            differences(sam_system(template()), terraform_system(texts)),
            ["daily-aggregate: statement AlertSigningKey: only in template.yaml ['secretsmanager:GetSecretValue'], only in terraform []"],
        )

    def test_pending_usage_is_rolled_up_from_the_stream_alike(self):
        sam, tf = sam_pending_usage(template()), terraform_pending_usage(terraform_texts())
        self.assertEqual(sam, tf)
        self.assertEqual(sam["function"], "usage-rollup")
        self.assertEqual(sam["view"], "KEYS_ONLY")
        self.assertEqual(sam["on_failure"], "FailedEventsQueue")
        # only pending items' inserts and changes: the roll-up's own deletes trigger nothing
        self.assertEqual(sam["filter"], [{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"SK": {"S": [{"prefix": "P#"}]}}}}])
        self.assertEqual(sam["settings"][1:4], (1000, 1, True))
        # one leaf that cannot be rolled up fails only its own records (the handler's
        # batchItemFailures), not its whole batch
        self.assertEqual(sam["response_types"], ["ReportBatchItemFailures"])

    def test_the_roll_up_is_a_function_of_its_own_not_budget_checks(self):
        # ADR 031 defect 2: stream invocations of budget-check kept its dead man's switch green
        # when the schedule was dead, took its reserved concurrency and fed its errors alarm
        for system, pending, alarms, source in (
            (sam_system(template()), sam_pending_usage(template()), sam_alarms(template()), "template.yaml"),
            (terraform_system(terraform_texts()), terraform_pending_usage(terraform_texts()), terraform_alarms(terraform_texts()),
             "terraform"),
        ):
            rollup, check = system["usage-rollup"], system["budget-check"]
            self.assertEqual(pending["function"], "usage-rollup", source)
            self.assertEqual((rollup["binary"], rollup["role"], check["role"]), ("budget-check", "roll-up", None), source)
            # budget-check neither takes the stream nor may read it
            self.assertNotIn("PendingUsageStream", check["statements"], source)
            self.assertEqual([f for f, _ in granting(system, "dynamodb:GetRecords")], ["usage-rollup"], source)
            # the stream's pollers run one invocation per shard: no reservation, nothing
            # taken from budget-check's; and enough time for a `roll_up: all` by hand
            self.assertIsNone(rollup["reserved_concurrency"], source)
            self.assertEqual(rollup["timeout"], 120, source)
            # no schedule, no subscription: only the stream and a person invoke it
            self.assertEqual((rollup["schedules"], rollup["subscriptions"], rollup["async"]), ([], [], None), source)
            # it rolls up and does nothing else: it publishes nothing and holds no secret, no
            # Cost Explorer and no budgets
            self.assertEqual(sorted(rollup["statements"]), ["ListStreams", "PendingUsageStream", "ReadPending", "RollUp"], source)
            self.assertEqual(rollup["statements"]["ReadPending"], ["dynamodb:Query"], source)
            self.assertEqual(rollup["statements"]["RollUp"], ["dynamodb:DeleteItem", "dynamodb:UpdateItem"], source)
            for variable in ("SPENDGUARD_OPENAI_ADMIN_KEY_ARN", "SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN", "SPENDGUARD_COST_EXPLORER"):
                self.assertNotIn(variable, rollup["environment"], source)
            # its lag and its failures alarm on it, not on budget-check
            self.assertEqual(alarms["pending-usage-lag"]["watches"][3], "usage-rollup", source)
            self.assertEqual(alarms["usage-rollup-errors"]["watches"][:4], ("AWS/Lambda", "Errors", "FunctionName", "usage-rollup"), source)
            self.assertIn("not being rolled up", alarms["usage-rollup-errors"]["description"], source)
        # the roll-up reads and writes only pending items, counters and holds, in both
        sids = {"ReadPending", "RollUp"}
        sam = sam_statements(template(), "UsageRollupFunction", sids)
        self.assertEqual(sam, terraform_statements(terraform_texts(), "usage-rollup", sids))
        self.assertEqual(sam["ReadPending"]["Condition"]["ForAllValues:StringLike"], {"dynamodb:LeadingKeys": ["SPEND#*", "SCOPES#*"]})
        self.assertEqual(sam["RollUp"]["Condition"]["ForAllValues:StringLike"], {"dynamodb:LeadingKeys": ["SPEND#*", "HOLDS#*", "LATE_SPEND#*"]})

    def test_a_stream_wired_back_to_budget_check_is_caught(self):
        texts = terraform_texts()
        marker = 'function_name                      = aws_lambda_function.function["usage-rollup"].arn'
        self.assertIn(marker, texts["functions.tf"])
        texts["functions.tf"] = texts["functions.tf"].replace(marker, marker.replace("usage-rollup", "budget-check"))
        self.assertEqual(terraform_pending_usage(texts)["function"], "budget-check")
        self.assertNotEqual(sam_pending_usage(template()), terraform_pending_usage(texts))

    def test_a_changed_stream_filter_is_caught(self):
        texts = terraform_texts()
        texts["functions.tf"] = texts["functions.tf"].replace('prefix = "P#"', 'prefix = "M#"', 1)
        self.assertNotEqual(sam_pending_usage(template()), terraform_pending_usage(texts))

    # ------------------------------------------------------------ tags, boundaries, protection, outputs

    def test_every_taggable_resource_carries_the_tags_in_both(self):
        sam_tagged, sam_untagged = sam_tags(template())
        tf_tagged, tf_untagged = terraform_tags(terraform_texts())
        self.assertEqual(sam_untagged, [])
        self.assertEqual(tf_untagged, [])
        self.assertEqual(sam_tagged, tf_tagged)
        self.assertEqual(sam_tagged, {"function": 6, "table": 1, "topic": 3, "secret": 1, "queue": 1, "log group": 6, "alarm": 17})
        # terraform: the caller's tags plus the deployment's; SAM: the stack's tags (sam deploy
        # --tags), which CloudFormation puts on every resource that takes tags
        locals_, _ = _terraform_parts(terraform_texts())
        self.assertEqual(locals_["tags"], '${merge(var.tags, {"spendguard:deployment" = var.name})}')
        self.assertEqual(_variable_defaults(terraform_texts().values())["tags"], {})

    def test_an_untagged_resource_is_caught_on_either_side(self):
        text = (ROOT / "template.yaml").read_text()
        marker = "  KeyGuardLogs:\n    Type: AWS::Logs::LogGroup\n"
        at = text.index("      Tags: [{ Key: spendguard:deployment, Value: !Ref AWS::StackName }]\n", text.index(marker))
        modified = template(text[:at] + text[at:].split("\n", 1)[1])
        tagged, untagged = sam_tags(modified)
        self.assertEqual(untagged, ["KeyGuardLogs"])
        self.assertNotEqual(tagged, terraform_tags(terraform_texts())[0])
        # SAM functions without PropagateTags would leave their roles untagged
        self.assertEqual(len(sam_tags(template(text.replace("    PropagateTags: true\n", "")))[1]), 6)
        texts = terraform_texts()
        head = texts["main.tf"].index('resource "aws_sns_topic" "operator" {')
        at = texts["main.tf"].index("  tags = local.tags\n", head)
        texts["main.tf"] = texts["main.tf"][:at] + texts["main.tf"][at + len("  tags = local.tags\n"):]
        tagged, untagged = terraform_tags(texts)
        self.assertEqual(untagged, ["aws_sns_topic.operator"])
        self.assertNotEqual(tagged, sam_tags(template())[0])

    def test_every_role_has_the_permissions_boundary_in_both(self):
        t = template()
        boundary = {"Fn::If": ["HasPermissionsBoundary", {"Ref": "PermissionsBoundary"}, {"Ref": "AWS::NoValue"}]}
        self.assertEqual(t["Conditions"]["HasPermissionsBoundary"], {"Fn::Not": [{"Fn::Equals": [{"Ref": "PermissionsBoundary"}, ""]}]})
        self.assertEqual(t["Globals"]["Function"]["PermissionsBoundary"], boundary)
        for logical, resource in t["Resources"].items():
            self.assertNotEqual(resource["Type"], "AWS::IAM::Role", f"{logical}: a role of its own needs the boundary too")
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            self.assertNotIn("PermissionsBoundary", resource["Properties"], logical)
            for event, spec in resource["Properties"].get("Events", {}).items():
                if spec["Type"] == "ScheduleV2":  # SAM generates a role per schedule
                    self.assertEqual(spec["Properties"].get("PermissionsBoundary"), boundary, f"{logical}.{event}")
        _, resources = _terraform_parts(terraform_texts())
        roles = {name: body.get("permissions_boundary") for (kind, name), body in resources.items() if kind == "aws_iam_role"}
        self.assertEqual(roles, {"function": "${var.permissions_boundary}", "scheduler": "${var.permissions_boundary}"})
        self.assertIsNone(_variable_defaults(terraform_texts().values())["permissions_boundary"])

    def test_optional_arns_are_validated_alike(self):
        t = template()
        variables = {}
        for text in terraform_texts().values():
            for block in hcl2.loads(text).get("variable", []):
                variables.update(_unquote(block))
        for parameter in OPTIONAL_ARNS:
            variable = _snake(parameter).replace("open_ai", "openai")
            self.assertEqual(t["Parameters"][parameter]["Default"], "", parameter)
            self.assertIsNone(variables[variable].get("default"), variable)
            (validation,) = variables[variable]["validation"]
            self.assertEqual(t["Parameters"][parameter]["AllowedPattern"], _terraform_pattern(validation["condition"]), parameter)

    def test_both_define_the_pending_index_the_store_queries(self):
        """ADR 031: the sparse `pending` index as DynamoStore::create_table defines it (the tests'
        tables): its partition a hash of the pending item's token, its sort key when the item was
        written (`pending_since`, not the record's `first_at`)."""
        source = (ROOT / "adapters" / "aws" / "src" / "dynamo.rs").read_text()

        def constant(name):
            return re.search(rf'const {name}: &str = "([^"]+)";', source).group(1)

        at = source.index(".index_name(PENDING_INDEX)")
        hash_key, range_key = (
            constant(re.search(rf"\.key_schema\(schema\((\w+), KeyType::{kind}\)", source[at:]).group(1))
            for kind in ("Hash", "Range")
        )
        want = {"name": constant("PENDING_INDEX"), "hash": (hash_key, "S"), "range": (range_key, "N"), "projection": "KEYS_ONLY"}
        self.assertEqual((hash_key, range_key), ("pending_shard", "pending_since"))

        table = template()["Resources"]["StateTable"]["Properties"]
        types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        (index,) = table["GlobalSecondaryIndexes"]
        keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
        sam = {"name": index["IndexName"], "hash": (keys["HASH"], types[keys["HASH"]]),
               "range": (keys["RANGE"], types[keys["RANGE"]]), "projection": index["Projection"]["ProjectionType"]}
        self.assertEqual(sam, want)

        _, resources = _terraform_parts(terraform_texts())
        state = resources[("aws_dynamodb_table", "state")]
        types = {a["name"]: a["type"] for a in state["attribute"]}
        (index,) = state["global_secondary_index"]
        tf = {"name": index["name"], "hash": (index["hash_key"], types[index["hash_key"]]),
              "range": (index["range_key"], types[index["range_key"]]), "projection": index["projection_type"]}
        self.assertEqual(tf, want)
        # a table defines only the attributes its keys use
        self.assertEqual(sorted(types), sorted(["PK", "SK", hash_key, range_key]))

    def test_the_table_is_protected_by_an_input_not_by_lifecycle(self):
        t = template()
        table = t["Resources"]["StateTable"]
        self.assertEqual((table["DeletionPolicy"], table["UpdateReplacePolicy"]), ("Retain", "Retain"))
        self.assertEqual(table["Properties"]["DeletionProtectionEnabled"], {"Ref": "DeletionProtection"})
        self.assertEqual(t["Parameters"]["DeletionProtection"]["Default"], "true")
        texts = terraform_texts()
        _, resources = _terraform_parts(texts)
        self.assertEqual(resources[("aws_dynamodb_table", "state")]["deletion_protection_enabled"], "${var.deletion_protection}")
        self.assertIs(_variable_defaults(texts.values())["deletion_protection"], True)
        # prevent_destroy takes no variable: the examples could never be destroyed
        self.assertIsNone(re.search(r"prevent_destroy\s*=", "".join(texts.values())))

    def test_both_have_the_same_outputs_each_with_a_description(self):
        sam, tf = sam_outputs(template()), terraform_outputs(terraform_texts())
        self.assertEqual(sorted(sam), sorted(tf))
        for name, description in {**sam, **tf}.items():
            self.assertTrue(description and description.strip(), f"{name} has no description")
        # docs/deploy.md's key rotation needs key-guard's ARN; operators' policies the roles'
        for key in ["function_arns[key-guard]", "role_arns[key-guard]", "failed_events_queue_arn", "failed_events_queue_url",
                    "dashboard_name", "state_table_arn"]:
            self.assertIn(key, sam)

    def test_an_output_missing_or_without_description_is_caught(self):
        text = (ROOT / "template.yaml").read_text()
        marker = "  DashboardName:\n    Description: The CloudWatch dashboard of spend against budgets.\n"
        self.assertIn(marker, text)
        modified = sam_outputs(template(text.replace(marker, "  DashboardName:\n")))
        self.assertIsNone(modified["dashboard_name"])
        texts = terraform_texts()
        texts["outputs.tf"] = texts["outputs.tf"].replace('output "role_arns"', 'output "function_roles"')
        tf = terraform_outputs(texts)
        self.assertNotEqual(sorted(sam_outputs(template())), sorted(tf))
        self.assertIn("function_roles[key-guard]", tf)


if __name__ == "__main__":
    unittest.main()
