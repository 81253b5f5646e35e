//! key-guard test world: the production wiring (`app::handler`) against moto (DynamoDB,
//! Secrets Manager, IAM, STS) and local stand-ins for the Anthropic and OpenAI admin APIs that
//! keep each key's state like the real services do.

use std::collections::BTreeMap;
use std::sync::Arc;

use key_guard::app;
use key_guard::config::Config;
use key_guard::handler::Handler;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_domain::keys::KeySpec;
use spendguard_domain::settings::PolicySet;

use crate::admin_apis::{
    ANTHROPIC_ADMIN_KEY, OPENAI_ADMIN_KEY, ProviderState, anthropic_standin, openai_standin,
};
use crate::aws;
use crate::standin::StandIn;
use spendguard_app::ports::store::PolicyStore;

pub struct KeyGuardWorld {
    pub sdk: aws_config::SdkConfig,
    pub store: DynamoStore,
    pub handler: Handler,
    pub anthropic: Arc<ProviderState>,
    pub openai: Arc<ProviderState>,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub iam: aws_sdk_iam::Client,
    /// The configuration `handler` was built from (to build another, e.g. through a proxy).
    pub config: Config,
    _standins: (StandIn, StandIn),
}

impl KeyGuardWorld {
    /// `keys` are registered after the secrets they name exist; `make` builds them from the
    /// world (so specs can point at secrets and IAM keys it created).
    pub async fn new(policy: PolicySet) -> KeyGuardWorld {
        let sdk = aws::sdk().await;
        let (store, table) = aws::new_store(&sdk).await;
        store.put_policy(&policy).await.unwrap();
        let anthropic = Arc::new(ProviderState::default());
        let openai = Arc::new(ProviderState::default());
        let a = anthropic_standin(anthropic.clone()).await;
        let o = openai_standin(openai.clone()).await;
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let config = Config {
            table,
            anthropic_admin_key_arn: Some(
                aws::secret(&sdk, "anthropic-admin", ANTHROPIC_ADMIN_KEY).await,
            ),
            anthropic_api_url: a.url.clone(),
            anthropic_spend_limits: false,
            openai_admin_key_arn: Some(aws::secret(&sdk, "openai-admin", OPENAI_ADMIN_KEY).await),
            openai_api_url: o.url.clone(),
            gcp_credential_arn: None,
            gcp_token_url: None,
            gcp_billing_api_url: spendguard_http::gcp::BILLING_API.into(),
            gcp_iam_api_url: spendguard_http::gcp::IAM_API.into(),
            alerts_topic_arn: None,
            own_function_name: None,
            alert_signing_key_arn: None,
        };
        let handler = app::handler(&config, &sdk).await.expect("key-guard starts");
        KeyGuardWorld {
            iam: aws_sdk_iam::Client::new(&sdk),
            sdk,
            store,
            handler,
            anthropic,
            openai,
            secrets,
            config,
            _standins: (a, o),
        }
    }

    /// key-guard as deployed, on `sdk` (a fault proxy, say) and `clock` (a test's own).
    pub async fn handler_at(
        &self,
        sdk: &aws_config::SdkConfig,
        clock: Arc<dyn spendguard_app::ports::clock::Clock>,
    ) -> Handler {
        let backends = spendguard_app::backends::Backends {
            clock,
            ..spendguard_aws::backends::deployed(sdk, &self.config.table)
        };
        app::handler_with(&self.config, sdk, backends, app::AwsKeys::Managed)
            .await
            .expect("key-guard starts")
    }

    /// A secret holding `value`; returns its ARN.
    pub async fn secret(&self, name: &str, value: &str) -> String {
        aws::secret(&self.sdk, name, value).await
    }

    /// Registers keys (as `spendguard budgets apply` would).
    pub async fn register(&self, keys: Vec<KeySpec>) {
        let mut policy = self.store.load_policy().await.unwrap();
        policy.keys = keys;
        self.store.put_policy(&policy).await.unwrap();
    }

    /// The value and stages of every version of a secret.
    pub async fn versions(&self, arn: &str) -> BTreeMap<String, Vec<String>> {
        let d = self
            .secrets
            .describe_secret()
            .secret_id(arn)
            .send()
            .await
            .unwrap();
        d.version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| !s.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn current_value(&self, arn: &str) -> String {
        // by stage: moto's stage-less read does not follow UpdateSecretVersionStage (AWS's does)
        self.secrets
            .get_secret_value()
            .secret_id(arn)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap()
            .to_string()
    }

    /// An IAM user with one access key; returns (access key id, secret access key).
    pub async fn iam_key(&self, user: &str) -> (String, String) {
        self.iam.create_user().user_name(user).send().await.unwrap();
        let key = self
            .iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .unwrap()
            .access_key
            .unwrap();
        (key.access_key_id, key.secret_access_key)
    }

    /// An Amazon Bedrock API key (a service-specific credential) of `user`; returns its id.
    pub async fn bedrock_key(&self, user: &str) -> String {
        self.iam
            .create_service_specific_credential()
            .user_name(user)
            .service_name("bedrock.amazonaws.com")
            .send()
            .await
            .unwrap()
            .service_specific_credential
            .unwrap()
            .service_specific_credential_id
    }

    pub async fn set_bedrock_key(&self, user: &str, id: &str, active: bool) {
        let status = if active {
            aws_sdk_iam::types::StatusType::Active
        } else {
            aws_sdk_iam::types::StatusType::Inactive
        };
        self.iam
            .update_service_specific_credential()
            .user_name(user)
            .service_specific_credential_id(id)
            .status(status)
            .send()
            .await
            .unwrap();
    }

    pub async fn bedrock_active(&self, user: &str, id: &str) -> bool {
        let out = self
            .iam
            .list_service_specific_credentials()
            .user_name(user)
            .send()
            .await
            .unwrap();
        let credential = out
            .service_specific_credentials()
            .iter()
            .find(|c| c.service_specific_credential_id() == id)
            .unwrap_or_else(|| panic!("no service credential {id}"));
        credential.status() == &aws_sdk_iam::types::StatusType::Active
    }

    /// The document of the user's inline policy `name`, if it has one.
    pub async fn user_policy(&self, user: &str, name: &str) -> Option<serde_json::Value> {
        match self
            .iam
            .get_user_policy()
            .user_name(user)
            .policy_name(name)
            .send()
            .await
        {
            Ok(out) => {
                // IAM answers the document URL-encoded
                let document =
                    url::form_urlencoded::parse(format!("d={}", out.policy_document()).as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap();
                Some(serde_json::from_str(&document).unwrap())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                None
            }
            Err(e) => panic!("GetUserPolicy: {e:?}"),
        }
    }

    pub async fn iam_active(&self, user: &str, id: &str) -> bool {
        let keys = self
            .iam
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .unwrap();
        keys.access_key_metadata().iter().any(|k| {
            k.access_key_id() == Some(id)
                && k.status() == Some(&aws_sdk_iam::types::StatusType::Active)
        })
    }
}
