"""Independent implementations that produce what spendguard must accept or refuse.

The tests call this script with a JSON request on stdin and read a JSON answer on stdout:

  {"op": "webhook-sign", "secret": "whsec_...", "id": "...", "timestamp": 1764000000, "body": "..."}
      -> {"signature": "v1,..."}             (the `standardwebhooks` package)
  {"op": "webhook-verify", "secret": "whsec_...", "headers": {...}, "body": "..."}
      -> {"valid": true}                       (the `standardwebhooks` package)
  {"op": "rsa-key", "kid": "k1"}
      -> {"private_pem": "...", "jwks": {...}} (a fresh RSA key and its JWKS)
  {"op": "jwt", "private_pem": "...", "kid": "k1", "claims": {...}, "alg": "RS256"}
      -> {"token": "..."}                      (PyJWT; alg "none" and "HS256-public" are forged by hand)
  {"op": "jwt-verify", "token": "...", "public_pem": "...", "audience": "..."}
      -> {"valid": true, "claims": {...}}      (PyJWT: RS256 signature, audience, expiry)
  {"op": "sns-sign", "message": {...}, "version": "1"|"2", "cert_url": "..."}
      -> {"message": {...}, "certificate_pem": "..."}  (cryptography: self-signed cert, SNS string to sign)
"""

import base64
import datetime
import hashlib
import hmac
import json
import sys

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def webhook_sign(req):
    ts = datetime.datetime.fromtimestamp(req["timestamp"], tz=datetime.timezone.utc)
    return {"signature": Webhook(req["secret"]).sign(req["id"], ts, req["body"])}


def webhook_verify(req):
    ts = datetime.datetime.fromtimestamp(int(req["headers"]["webhook-timestamp"]), tz=datetime.timezone.utc)
    try:
        Webhook(req["secret"]).verify(req["body"], req["headers"])
        return {"valid": True}
    except Exception as e:  # the library raises WebhookVerificationError
        return {"valid": False, "error": str(e), "timestamp": ts.isoformat()}


def rsa_key(req):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    def uint(n):
        return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = {"kid": req["kid"], "kty": "RSA", "alg": "RS256", "use": "sig", "n": uint(numbers.n), "e": uint(numbers.e)}
    return {"private_pem": pem.decode(), "public_pem": public_pem.decode(), "jwks": {"keys": [jwk]}}


def mint_jwt(req):
    alg = req.get("alg", "RS256")
    header = {"alg": alg, "kid": req["kid"], "typ": "JWT"}
    if alg == "RS256":
        return {"token": jwt.encode(req["claims"], req["private_pem"], algorithm="RS256", headers={"kid": req["kid"]})}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(req["claims"]).encode())
    if alg == "none":
        return {"token": signing_input + "."}
    if alg == "HS256-public":
        header["alg"] = "HS256"
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(req["claims"]).encode())
        mac = hmac.new(req["public_pem"].encode(), signing_input.encode(), hashlib.sha256).digest()
        return {"token": signing_input + "." + b64url(mac)}
    raise SystemExit(f"unknown alg {alg}")


def verify_jwt(req):
    try:
        claims = jwt.decode(req["token"], req["public_pem"], algorithms=["RS256"], audience=req["audience"])
        return {"valid": True, "claims": claims}
    except jwt.PyJWTError as e:
        return {"valid": False, "error": str(e)}


def sns_sign(req):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=req.get("valid_days", 30)))
        .sign(key, hashes.SHA256())
    )
    m = dict(req["message"])
    if m["Type"] == "Notification":
        fields = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        fields = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{f}\n{m[f]}\n" for f in fields if f in m)
    digest = hashes.SHA1() if req["version"] == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), digest)
    m["SignatureVersion"] = req["version"]
    m["Signature"] = base64.b64encode(signature).decode()
    m["SigningCertURL"] = req["cert_url"]
    return {"message": m, "certificate_pem": cert.public_bytes(serialization.Encoding.PEM).decode()}


OPS = {"webhook-sign": webhook_sign, "webhook-verify": webhook_verify, "rsa-key": rsa_key, "jwt": mint_jwt, "jwt-verify": verify_jwt, "sns-sign": sns_sign}

if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(OPS[request["op"]](request), sys.stdout)
