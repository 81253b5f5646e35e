"""IAM service-specific credentials for moto, which does not implement them.

Amazon Bedrock's long-term API keys are service-specific credentials of an IAM user; key-guard
sets them Inactive with the user's access key. This adds the three calls it and its tests use,
refusing what IAM refuses (documented in the IAM API reference for each action):

- CreateServiceSpecificCredential: the user must exist (NoSuchEntity); ServiceName one of
  codecommit, cassandra (Amazon Keyspaces) or bedrock (NotSupportedService otherwise); at most
  two credentials per user and service (LimitExceeded).
- ListServiceSpecificCredentials: the user must exist; an optional ServiceName filter.
- UpdateServiceSpecificCredential: the user and the credential (of that user) must exist;
  Status is Active or Inactive (ValidationError otherwise).

State lives on the IAM backend object, per account and partition, like moto's own.
"""

import datetime
import secrets

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, EmptyResult
from moto.iam.exceptions import LimitExceededException, NoSuchEntity, ValidationError
from moto.iam.responses import IamResponse

SERVICES = (
    "codecommit.amazonaws.com",
    "cassandra.amazonaws.com",
    "bedrock.amazonaws.com",
)
PER_USER_AND_SERVICE = 2


class NotSupportedService(ServiceException):
    code = "NotSupportedService"


def _credentials(backend) -> dict:
    if not hasattr(backend, "spendguard_service_credentials"):
        backend.spendguard_service_credentials = {}
    return backend.spendguard_service_credentials


def _metadata(c: dict) -> dict:
    return {k: v for k, v in c.items() if k not in ("ServicePassword", "ServiceCredentialSecret")}


def create_service_specific_credential(self) -> ActionResult:
    user = self._get_param("UserName")
    service = self._get_param("ServiceName")
    self.backend.get_user(user)  # NoSuchEntity
    if service not in SERVICES:
        raise NotSupportedService(f"Service {service} is not supported.")
    store = _credentials(self.backend)
    if sum(1 for c in store.values() if c["UserName"] == user and c["ServiceName"] == service) >= PER_USER_AND_SERVICE:
        raise LimitExceededException(
            f"Cannot exceed quota for ServiceSpecificCredentialsPerUserPerService: {PER_USER_AND_SERVICE}"
        )
    credential_id = "ACCA" + secrets.token_hex(8).upper()
    credential = {
        "CreateDate": datetime.datetime.now(datetime.timezone.utc),
        "ServiceName": service,
        "ServiceUserName": f"{user}-at-{secrets.randbelow(10**6)}",
        "ServiceSpecificCredentialId": credential_id,
        "UserName": user,
        "Status": "Active",
    }
    if service == "bedrock.amazonaws.com":
        credential["ServiceCredentialAlias"] = f"BedrockAPIKey-{credential_id[-6:]}"
        credential["ServiceCredentialSecret"] = "ABSK" + secrets.token_urlsafe(30)
    else:
        credential["ServicePassword"] = secrets.token_urlsafe(30)
    store[credential_id] = credential
    return ActionResult({"ServiceSpecificCredential": credential})


def list_service_specific_credentials(self) -> ActionResult:
    user = self._get_param("UserName")
    service = self._get_param("ServiceName")
    self.backend.get_user(user)
    if service is not None and service not in SERVICES:
        raise NotSupportedService(f"Service {service} is not supported.")
    found = [
        _metadata(c)
        for c in _credentials(self.backend).values()
        if c["UserName"] == user and (service is None or c["ServiceName"] == service)
    ]
    return ActionResult({"ServiceSpecificCredentials": found, "IsTruncated": False})


def update_service_specific_credential(self) -> ActionResult:
    user = self._get_param("UserName")
    credential_id = self._get_param("ServiceSpecificCredentialId")
    status = self._get_param("Status")
    self.backend.get_user(user)
    if status not in ("Active", "Inactive"):
        raise ValidationError(
            f"1 validation error detected: Value '{status}' at 'status' failed to satisfy "
            "constraint: Member must satisfy enum value set: [Active, Inactive]"
        )
    credential = _credentials(self.backend).get(credential_id)
    if credential is None or credential["UserName"] != user:
        raise NoSuchEntity(f"No such service specific credential: {credential_id}")
    credential["Status"] = status
    return EmptyResult()


def install() -> None:
    IamResponse.create_service_specific_credential = create_service_specific_credential
    IamResponse.list_service_specific_credentials = list_service_specific_credentials
    IamResponse.update_service_specific_credential = update_service_specific_credential
