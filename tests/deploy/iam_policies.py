"""The IAM policies of both deployments as AWS would hold them, and an evaluator to ask them.

template.yaml's and terraform/'s roles and resource policies, with every intrinsic (!Ref, !Sub,
!GetAtt, !If on the template's conditions; terraform's references, compact(), the conditional
list) resolved to concrete ARNs for one test deployment: account 111122223333, us-east-1,
stack or name `spendguard`, and every optional input given, so every optional grant is present
(the most any deployment can hold). What SAM adds to a function's role beyond its Policies is
added as SAM documents it (AWSLambdaBasicExecutionRole, AWSXrayWriteOnlyAccess for active
tracing, AWSLambdaDynamoDBExecutionRole for a DynamoDB stream event, sqs:SendMessage for a
dead-letter queue or an SQS on-failure destination (the function's, or a stream event's), and a
role per ScheduleV2 event that may invoke the function and send its dead letters).

Requests are evaluated by @cloud-copilot/iam-simulate (tests/deploy/iam/, ADR 024) in Strict
mode: identity policies, resource policies (explicit denies included) and every condition
operator. An expression or a resource this module cannot read raises instead of being guessed.
"""

import atexit
import json
import pathlib
import re
import shutil
import subprocess

from test_parity import _present, _sam_function_name, _terraform_parts, _variable_defaults, template, terraform_texts

HERE = pathlib.Path(__file__).resolve().parent
EVALUATOR = HERE / "iam"

ACCOUNT = "111122223333"
REGION = "us-east-1"
PARTITION = "aws"
STACK = "spendguard"
DENY_ALL = "arn:aws:iam::aws:policy/AWSDenyAll"
SHUTDOWN_TAG = "aws:ResourceTag/spendguard:shutdown"


def _secret(name):
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"


# Every optional input given: the deployment holding the most grants.
INPUTS = {
    "usage_secret_arn": _secret("spendguard-usage"),
    "status_token_arn": _secret("spendguard-status"),
    "channel_secret_arns": [_secret("slack-ops")],
    "key_secret_arns": [_secret("openai-prod-key")],
    "openai_admin_key_arn": _secret("openai-admin"),
    "anthropic_admin_key_arn": _secret("anthropic-admin"),
    "gcp_shutdown_credential_arn": _secret("gcp-shutdown"),
    "guarded_iam_user_arns": [f"arn:aws:iam::{ACCOUNT}:user/ci-deployer"],
    "ses_identity_arn": f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/alerts@example.com",
    "gcp_push_audience": "https://example.com/gcp/pubsub",
    "gcp_push_service_account": "push@example-project.iam.gserviceaccount.com",
    "gcp_push_subscription": "projects/example-project/subscriptions/budgets",
    "operator_email": "ops@example.com",
    "cost_explorer": True,
    "anthropic_spend_limits": True,
}

# the same inputs as template parameters (CostExplorer and AnthropicSpendLimits are strings there)
PARAMETERS = {
    "UsageSecretArn": INPUTS["usage_secret_arn"],
    "StatusTokenArn": INPUTS["status_token_arn"],
    "ChannelSecretArns": INPUTS["channel_secret_arns"],
    "KeySecretArns": INPUTS["key_secret_arns"],
    "OpenAiAdminKeyArn": INPUTS["openai_admin_key_arn"],
    "AnthropicAdminKeyArn": INPUTS["anthropic_admin_key_arn"],
    "GcpShutdownCredentialArn": INPUTS["gcp_shutdown_credential_arn"],
    "GuardedIamUserArns": INPUTS["guarded_iam_user_arns"],
    "SesIdentityArn": INPUTS["ses_identity_arn"],
    "GcpPushAudience": INPUTS["gcp_push_audience"],
    "GcpPushServiceAccount": INPUTS["gcp_push_service_account"],
    "GcpPushSubscription": INPUTS["gcp_push_subscription"],
    "OperatorEmail": INPUTS["operator_email"],
    "CostExplorer": "enabled",
    "AnthropicSpendLimits": "true",
}

FUNCTIONS = ["alert-fanout", "budget-check", "budget-webhook", "daily-aggregate", "key-guard", "usage-rollup"]


class Deployment:
    """One deployment's IAM: roles (name -> {arn, policies}), the function each role runs
    (function -> role name), resource policies and ARNs by what they are."""

    def __init__(self, source, roles, function_roles, topic_policies, arns):
        self.source = source
        self.roles = roles
        self.function_roles = function_roles
        self.topic_policies = topic_policies
        self.arns = arns

    def role_of(self, function):
        return self.roles[self.function_roles[function]]


# ---------------------------------------------------------------- template.yaml

NO_VALUE = object()

# What SAM adds to every function's role (AWS's managed policies, as AWS publishes them)
BASIC_EXECUTION = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"}]}
XRAY_WRITE_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
                                   "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"], "Resource": "*"}]}
# what SAM adds to the role of a function with a DynamoDB stream event
DYNAMODB_EXECUTION = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
                                   "dynamodb:ListStreams", "logs:CreateLogGroup", "logs:CreateLogStream",
                                   "logs:PutLogEvents"], "Resource": "*"}]}


class _Cfn:
    def __init__(self, t, parameters):
        self.t = t
        self.parameters = {}
        for name, spec in t["Parameters"].items():
            value = parameters.get(name, spec.get("Default"))
            if value is None:
                raise ValueError(f"template parameter {name} has no default: give it in PARAMETERS")
            if spec["Type"] == "CommaDelimitedList" and isinstance(value, str):
                value = [v for v in value.split(",")] if value else [""]
            self.parameters[name] = value if isinstance(value, list) else str(value)

    def condition(self, name):
        return self.truth(self.t["Conditions"][name])

    def truth(self, c):
        ((fn, args),) = c.items()
        if fn == "Fn::Not":
            return not self.truth(args[0])
        if fn == "Fn::And":
            return all(self.truth(a) for a in args)
        if fn == "Fn::Or":
            return any(self.truth(a) for a in args)
        if fn == "Fn::Equals":
            a, b = (self.value(x) for x in args)
            return str(a) == str(b)
        if fn in ("Condition", "Fn::Condition"):  # test_parity's loader reads !Condition as Fn::Condition
            return self.condition(args)
        raise ValueError(f"condition {c!r}")

    def physical(self, logical, attribute=None):
        """Ref (attribute None) or GetAtt of a resource, as CloudFormation and SAM name it."""
        if logical.endswith("Role") and logical[: -len("Role")] in self.t["Resources"]:
            function = logical[: -len("Role")]
            assert self.t["Resources"][function]["Type"] == "AWS::Serverless::Function", logical
            name = f"{STACK}-{logical}-1A2B3C4D5E6F"
            return {None: name, "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}"}[attribute]
        resource = self.t["Resources"][logical]
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::SNS::Topic":
            arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{self.value(props['TopicName'])}"
            return {None: arn, "TopicName": self.value(props["TopicName"])}[attribute]
        if kind == "AWS::SecretsManager::Secret":
            return {None: _secret(logical)}[attribute]
        if kind == "AWS::DynamoDB::Table":
            name = f"{STACK}-{logical}-1A2B3C4D5E6F"
            table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
            return {None: name, "Arn": table, "StreamArn": f"{table}/stream/2026-12-07T00:00:00.000"}[attribute]
        if kind == "AWS::SQS::Queue":
            name = self.value(props["QueueName"])
            return {None: f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}", "QueueName": name,
                    "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"}[attribute]
        if kind == "AWS::Serverless::Function":
            name = self.value(props["FunctionName"])
            return {None: name, "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"}[attribute]
        raise ValueError(f"no physical name known for {logical} ({kind}) {attribute or 'Ref'}")

    def ref(self, name):
        pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION,
                  "AWS::StackName": STACK, "AWS::NoValue": NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical(name)

    def value(self, v):
        if isinstance(v, list):
            out = []
            for item in v:
                item = self.value(item)
                if item is NO_VALUE:
                    continue
                # a list parameter (!Ref ChannelSecretArns) inside a list is flattened, as CloudFormation does
                out.extend(item) if isinstance(item, list) else out.append(item)
            return out
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            ((fn, args),) = v.items()
            if fn == "Ref":
                return self.ref(args)
            if fn == "Fn::GetAtt":
                return self.physical(args[0], args[1])
            if fn == "Fn::If":
                return self.value(args[1] if self.condition(args[0]) else args[2])
            if fn == "Fn::Sub":
                assert isinstance(args, str), v

                def sub(m):
                    name = m.group(1)
                    if "." in name:
                        logical, attribute = name.split(".", 1)
                        return self.physical(logical, attribute)
                    value = self.ref(name)
                    assert isinstance(value, str), (name, value)
                    return value
                return re.sub(r"\$\{([\w:.]+)\}", sub, args)
            if fn == "Fn::Join":
                return args[0].join(self.value(args[1]))
            if fn.startswith("Fn::") or fn == "Condition":
                raise ValueError(f"intrinsic {fn} not read here: {v!r}")
        out = {}
        for k, item in v.items():
            item = self.value(item)
            if item is not NO_VALUE:
                out[k] = item
        return out


def _role(arn, *policies):
    return {"arn": arn, "policies": [{"name": name, "policy": doc} for name, doc in policies]}


def _send(queue_arn):
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn}]}


def sam_deployment(t=None, parameters=PARAMETERS):
    t = template() if t is None else t
    cfn = _Cfn(t, parameters)
    glob = t["Globals"]["Function"]
    roles, function_roles = {}, {}
    for logical, resource in t["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        function = _sam_function_name(props)
        assert "Role" not in props, f"{logical}: a role of its own is not read here"
        policies = [("AWSLambdaBasicExecutionRole", BASIC_EXECUTION)]
        if props.get("Tracing", glob.get("Tracing")) == "Active":
            policies.append(("AWSXrayWriteOnlyAccess", XRAY_WRITE_ONLY))
        for i, policy in enumerate(props.get("Policies", [])):
            if not isinstance(policy, dict) or "Statement" not in policy:
                raise ValueError(f"{logical}: policy {policy!r} (a SAM policy template or managed policy) is not expanded here")
            doc = cfn.value(policy)
            doc["Statement"] = [s for s in doc["Statement"] if s]
            policies.append((f"{logical}Policy{i}", doc))
        if "DeadLetterQueue" in props:
            policies.append((f"{logical}DeadLetterQueue", _send(cfn.value(props["DeadLetterQueue"]["TargetArn"]))))
        failure = props.get("EventInvokeConfig", {}).get("DestinationConfig", {}).get("OnFailure")
        if failure:
            assert failure["Type"] == "SQS", failure
            policies.append((f"{logical}EventInvokeConfigOnFailure", _send(cfn.value(failure["Destination"]))))
        for event_name, event in props.get("Events", {}).items():
            if event["Type"] != "DynamoDB":
                continue
            policies.append(("AWSLambdaDynamoDBExecutionRole", DYNAMODB_EXECUTION))
            stream_failure = event["Properties"].get("DestinationConfig", {}).get("OnFailure")
            if stream_failure:
                assert stream_failure["Type"] == "SQS", stream_failure
                policies.append((f"{logical}{event_name}SQSPolicy", _send(cfn.value(stream_failure["Destination"]))))
        name = f"{logical}Role"
        roles[name] = _role(cfn.physical(name, "Arn"), *policies)
        function_roles[function] = name
        function_arn = cfn.physical(logical, "Arn")
        for event_name, event in props.get("Events", {}).items():
            if event["Type"] != "ScheduleV2":
                continue
            schedule_policies = [(f"{logical}{event_name}StartExecutionPolicy", {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": function_arn}]})]
            if "DeadLetterConfig" in event["Properties"]:
                schedule_policies.append((f"{logical}{event_name}DLQPolicy", _send(cfn.value(event["Properties"]["DeadLetterConfig"]["Arn"]))))
            role = f"{logical}{event_name}Role"
            roles[role] = _role(f"arn:aws:iam::{ACCOUNT}:role/{STACK}-{role}-1A2B3C4D5E6F", *schedule_policies)
    topic_policies = {}
    for logical, resource in t["Resources"].items():
        if resource["Type"] == "AWS::SNS::TopicPolicy":
            props = cfn.value(resource["Properties"])
            for topic in props["Topics"]:
                topic_policies[topic] = props["PolicyDocument"]
    arns = {
        "table": cfn.physical("StateTable", "Arn"),
        "alerts_topic": cfn.physical("AlertsTopic"),
        "budgets_topic": cfn.physical("BudgetsTopic"),
        "signing_key": cfn.physical("AlertSigningKey"),
        "queue": cfn.physical("FailedEventsQueue", "Arn"),
        "stream": cfn.physical("StateTable", "StreamArn"),
    }
    return Deployment("template.yaml", roles, function_roles, topic_policies, arns)


# ---------------------------------------------------------------- terraform

def _hcl_object(text):
    """The value of an HCL expression made of objects, tuples and string literals, as python-hcl2
    prints it (`{Sid = "x", Action = ["a"]}`); any other expression (a reference, a call, a `for`)
    is kept as "${expression}" for _Terraform.value."""
    value, rest = _hcl_value(text.strip())
    if rest.strip():
        raise ValueError(f"unread HCL: {rest!r}")
    return value


def _hcl_raw(text):
    depth, i, quoted = 0, 0, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif c == "," and depth == 0:
            break
        i += 1
    return text[:i].strip(), text[i:]


def _hcl_value(text):
    text = text.lstrip()
    if text.startswith('"'):
        m = re.match(r'"(?:[^"\\]|\\.)*"', text)
        return json.loads(m.group(0)), text[m.end():]
    if text.startswith("{"):
        out, text = {}, text[1:].lstrip()
        while not text.startswith("}"):
            m = re.match(r'("(?:[^"\\]|\\.)*"|[\w:-]+)\s*=\s*', text)
            if not m:
                raise ValueError(f"HCL object key expected: {text[:60]!r}")
            key = json.loads(m.group(1)) if m.group(1).startswith('"') else m.group(1)
            out[key], text = _hcl_value(text[m.end():])
            text = text.lstrip().removeprefix(",").lstrip()
        return out, text[1:]
    if text.startswith("[") and not re.match(r"\[\s*for\b", text):
        out, text = [], text[1:].lstrip()
        while not text.startswith("]"):
            item, text = _hcl_value(text)
            out.append(item)
            text = text.lstrip().removeprefix(",").lstrip()
        return out, text[1:]
    raw, rest = _hcl_raw(text)
    return "${" + raw + "}", rest


class _Terraform:
    def __init__(self, texts, inputs):
        self.locals, self.resources = _terraform_parts(texts)
        self.vars = _variable_defaults(texts.values())
        self.vars.update(inputs)
        self.name = self.vars["name"]

    def role_arn(self, function):
        return f"arn:aws:iam::{ACCOUNT}:role/{self.name}-{function}"

    def expression(self, e, each=None):
        e = e.strip()
        known = {
            "local.account": ACCOUNT,
            "data.aws_caller_identity.current.account_id": ACCOUNT,
            "local.partition": PARTITION,
            "data.aws_partition.current.partition": PARTITION,
            "data.aws_region.current.region": REGION,
            "aws_dynamodb_table.state.arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.name}-state",
            "aws_dynamodb_table.state.stream_arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.name}-state/stream/2026-12-07T00:00:00.000",
            "aws_sns_topic.alerts.arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{self.name}-alerts",
            "aws_sns_topic.budgets.arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{self.name}-aws-budgets",
            "aws_sqs_queue.failed_events.arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.name}-failed-events",
            # name_prefix: Terraform appends a unique suffix, Secrets Manager its own
            "aws_secretsmanager_secret.alert_signing.arn": _secret(f"{self.name}-alert-signing-20261101000000000000000001"),
        }
        if e in known:
            return known[e]
        m = re.fullmatch(r"var\.(\w+)", e)
        if m:
            return self.vars[m.group(1)]
        m = re.fullmatch(r"local\.(\w+)", e)
        if m:
            return self.value(self.locals[m.group(1)], each)
        m = re.fullmatch(r"compact\(\[(.*)\]\)", e)
        if m:
            return [v for v in (self.expression(x, each) for x in m.group(1).split(",")) if v]
        m = re.fullmatch(r"var\.(\w+) == null \? \[\] : \[var\.(\w+)\]", e)
        if m and m.group(1) == m.group(2):
            return [] if self.vars[m.group(1)] is None else [self.vars[m.group(1)]]
        m = re.fullmatch(r"aws_cloudwatch_log_group\.function\[each\.key\]\.arn", e)
        if m and each:
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{self.name}-{each}"
        m = re.fullmatch(r"\[for f in local\.(\w+) : aws_iam_role\.function\[f\]\.arn\]", e)
        if m:
            return [self.role_arn(f) for f in self.locals[m.group(1)]]
        m = re.fullmatch(r"distinct\(\[for s in local\.schedules : aws_lambda_function\.function\[s\.function\]\.arn\]\)", e)
        if m:
            functions = dict.fromkeys(s["function"] for s in self.locals["schedules"].values())
            return [f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}-{f}" for f in functions]
        raise ValueError(f"terraform expression not read by tests/deploy/iam_policies.py: {e!r}")

    def value(self, v, each=None):
        if isinstance(v, list):
            return [self.value(x, each) for x in v]
        if isinstance(v, dict):
            return {k: self.value(x, each) for k, x in v.items()}
        if not isinstance(v, str):
            return v
        whole = re.fullmatch(r"\$\{(.*)\}", v, re.S)
        if whole and "${" not in whole.group(1):
            return self.expression(whole.group(1), each)

        def part(m):
            value = self.expression(m.group(1), each)
            assert isinstance(value, str), (m.group(1), value)
            return value
        return re.sub(r"\$\{([^}]*)\}", part, v)

    def policy(self, resource, each=None):
        """A jsonencode({...}) policy of a resource, resolved."""
        text = self.resources[resource]["policy"]
        m = re.fullmatch(r"\$\{jsonencode\((.*)\)\}", text, re.S)
        assert m, text
        return self.value(_hcl_object(m.group(1)), each)


# how aws_iam_role_policy.function composes each function's statements (read, not evaluated:
# a change to it must be taught to function_policy below)
_COMPOSED = (
    "concat([for sid, actions in local.permissions[each.key] : merge({Sid = sid, Effect = \"Allow\", Action = actions, "
    "Resource = local.shared_resources[sid]}, contains(keys(local.conditions), sid) ? {Condition = local.conditions[sid]} : {}) "
    "if length(local.shared_resources[sid]) > 0], "
)


def terraform_deployment(texts=None, inputs=INPUTS):
    texts = terraform_texts() if texts is None else texts
    tf = _Terraform(texts, inputs)

    def function_policy(function):
        text = tf.resources[("aws_iam_role_policy", "function")]["policy"]
        doc = _hcl_object(re.fullmatch(r"\$\{jsonencode\((.*)\)\}", text, re.S).group(1))
        composed = doc["Statement"]
        assert composed.startswith("${" + _COMPOSED) and composed.endswith(")}"), (
            "aws_iam_role_policy.function composes its statements in a way tests/deploy/iam_policies.py does not read: " + composed)
        fixed = _hcl_object(composed[len("${" + _COMPOSED):-2])
        statements = []
        for sid, actions in tf.locals["permissions"][function].items():
            resources = tf.value(tf.locals["shared_resources"][sid], function)
            if not resources:
                continue
            statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
            if sid in tf.locals["conditions"]:
                statement["Condition"] = tf.value(tf.locals["conditions"][sid], function)
            statements.append(statement)
        statements += tf.value(fixed, function)
        return {"Version": doc["Version"], "Statement": statements}

    roles, function_roles = {}, {}
    for function in tf.locals["functions"]:
        name = f"{tf.name}-{function}"
        roles[name] = _role(tf.role_arn(function), (f"{function}-least-privilege", function_policy(function)))
        function_roles[function] = name
    roles[f"{tf.name}-scheduler"] = _role(f"arn:aws:iam::{ACCOUNT}:role/{tf.name}-scheduler",
                                          ("invoke-scheduled-functions", tf.policy(("aws_iam_role_policy", "scheduler"))))
    topic_policies = {}
    for (kind, name), body in tf.resources.items():
        if kind == "aws_sns_topic_policy":
            topic_policies[tf.value(body["arn"])] = tf.policy((kind, name))
    arns = {
        "table": tf.expression("aws_dynamodb_table.state.arn"),
        "alerts_topic": tf.expression("aws_sns_topic.alerts.arn"),
        "budgets_topic": tf.expression("aws_sns_topic.budgets.arn"),
        "signing_key": tf.expression("aws_secretsmanager_secret.alert_signing.arn"),
        "queue": tf.expression("aws_sqs_queue.failed_events.arn"),
        "stream": tf.expression("aws_dynamodb_table.state.stream_arn"),
    }
    return Deployment("terraform", roles, function_roles, topic_policies, arns)


# ---------------------------------------------------------------- the evaluator

def ensure_evaluator():
    """Installs the pinned evaluator (package-lock.json) on first use, like scripts/lib/moto.sh's venv."""
    if (EVALUATOR / "node_modules" / "@cloud-copilot" / "iam-simulate" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("the IAM evaluator needs Node.js and npm (ADR 024)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                   cwd=EVALUATOR, check=True, stdout=subprocess.DEVNULL)


_EVALUATOR_PROCESS = None


def _stop_evaluator():
    if _EVALUATOR_PROCESS is not None:
        _EVALUATOR_PROCESS.stdin.close()
        _EVALUATOR_PROCESS.wait(timeout=10)


def run_evaluator(simulations=(), samples=()):
    """Asks the evaluator: one Node process for the whole run, one line a question."""
    global _EVALUATOR_PROCESS
    if _EVALUATOR_PROCESS is None:
        ensure_evaluator()
        _EVALUATOR_PROCESS = subprocess.Popen(["node", str(EVALUATOR / "simulate.mjs")], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, text=True)
        atexit.register(_stop_evaluator)
    request = {"simulations": list(simulations), "samples": list(samples),
               "fill": {"Partition": PARTITION, "Account": ACCOUNT, "Region": REGION}}
    _EVALUATOR_PROCESS.stdin.write(json.dumps(request) + "\n")
    _EVALUATOR_PROCESS.stdin.flush()
    answer = _EVALUATOR_PROCESS.stdout.readline()
    if not answer:
        raise RuntimeError(f"the IAM evaluator stopped (exit {_EVALUATOR_PROCESS.wait()}); its error is above")
    return json.loads(answer)


class Request:
    """One request by a role: action on resource with context keys; decision filled by evaluate()."""

    def __init__(self, role, action, resource, context=None, resource_policy=None):
        self.role, self.action, self.resource = role, action, resource
        self.context = dict(context or {})
        self.resource_policy = resource_policy
        self.decision = self.ignored = self.errors = None

    def simulation(self):
        # the role's own ARN is aws:PrincipalArn of any of its sessions
        context = {"aws:PrincipalArn": self.role["arn"], "aws:PrincipalAccount": ACCOUNT, **self.context}
        session = self.role["arn"].replace(":iam::", ":sts::").replace(":role/", ":assumed-role/") + "/probe"
        s = {"principal": session, "action": self.action, "resource": self.resource, "account": ACCOUNT,
             "context": context, "identityPolicies": self.role["policies"]}
        if self.resource_policy is not None:
            s["resourcePolicy"] = self.resource_policy
        return s

    def __repr__(self):
        return f"{self.role['arn'].rsplit('/', 1)[-1]} {self.action} on {self.resource} {self.context or ''}: {self.decision}"


def evaluate(requests):
    """Fills each request's decision ("Allowed", "ImplicitlyDenied", "ExplicitlyDenied" or
    "error"), the context keys the evaluator left out (not applicable to the request) and its errors."""
    requests = list(requests)
    results = run_evaluator(r.simulation() for r in requests)["results"]
    for r, result in zip(requests, results, strict=True):
        r.decision, r.ignored, r.errors = result["decision"], result["ignored"], result["errors"]
    return requests


def resources_of(*actions):
    """Sample resources of each action (`service:*` for all of a service's), from AWS's
    Service Authorization Reference as the evaluator ships it: {action: [arn or "*", ...]}."""
    return run_evaluator(samples=actions)["samples"]
