//! Budget signals that arrive on their own: GCP Cloud Billing budget notifications (Pub/Sub
//! push) and AWS Budgets notifications (SNS). Parsed strictly where the format is documented,
//! tolerantly where the sender may reword prose.

pub mod aws_budgets;
pub mod gcp;
