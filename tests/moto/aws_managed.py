"""AWS managed policies in moto: AWSDenyAll, always.

moto knows AWS's managed policies (`moto/iam/aws_managed_policies.py`, a copy of AWS's own), but
loads them into an account's IAM backend only when `MOTO_IAM_LOAD_MANAGED_POLICIES=true` is set
in the server's environment (or `iam.load_aws_managed_policies` in the decorator's config, which
moto's server-mode `/moto-api/config` does not accept for IAM in moto 5.2). Loading all of them
(about 1,300) changes what `ListPolicies --scope AWS` answers for every other test and costs
time at each backend's start, so this loads exactly one: `AWSDenyAll`, from moto's own copy of
its document, built as moto builds the others (`AWSManagedPolicy.from_data`), so that its ARN is
`arn:<partition>:iam::aws:policy/AWSDenyAll` and AttachRolePolicy, DetachRolePolicy and
ListAttachedRolePolicies treat it as the real one. The shutdown of an IAM role attaches it.
"""

import json

from moto.iam import models
from moto.iam.aws_managed_policies import aws_managed_policies_data

ALWAYS = ("AWSDenyAll",)

_init_aws_policies = models.IAMBackend._init_aws_policies


def _with_deny_all(backend):
    policies = _init_aws_policies(backend)
    if policies:  # moto loaded every managed policy itself
        return policies
    data = json.loads(aws_managed_policies_data)
    return [
        models.AWSManagedPolicy.from_data(
            name, backend.account_id, backend.region_name, data[name]
        )
        for name in ALWAYS
    ]


def install() -> None:
    models.IAMBackend._init_aws_policies = _with_deny_all
