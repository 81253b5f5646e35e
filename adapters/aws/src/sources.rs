//! The spend sources read through the AWS SDK: AWS Budgets and Cost Explorer.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_app::env::SourcesConfig;
use spendguard_app::ports::sources::SpendSource;
use spendguard_app::ports::store::StateStore;

/// The AWS spend sources this deployment enables: AWS Budgets (with the figures its
/// notifications carried, kept in `store`) and Cost Explorer.
pub fn spend_sources(
    config: &SourcesConfig,
    sdk: &SdkConfig,
    store: &Arc<dyn StateStore>,
) -> Vec<Arc<dyn SpendSource>> {
    let mut sources: Vec<Arc<dyn SpendSource>> = Vec::new();
    if let Some(account) = &config.aws_account_id {
        sources.push(Arc::new(
            crate::budgets::AwsBudgets::new(aws_sdk_budgets::Client::new(sdk), account)
                .with_notifications(store.clone()),
        ));
    }
    if config.cost_explorer {
        sources.push(Arc::new(crate::cost_explorer::CostExplorer::new(
            aws_sdk_costexplorer::Client::new(sdk),
            store.clone(),
            chrono::Duration::hours(config.cost_explorer_cache_hours),
        )));
    }
    sources
}
