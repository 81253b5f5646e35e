//! AWS Budgets notifications as delivered through SNS. The message is plain text: a prose
//! paragraph, then `Key: value` lines. The prose may be reworded by AWS, so only the lines are
//! read, unknown lines are ignored, and the raw text is kept by the caller for the audit log.
//! A JSON rendering (seen from some integrations) is accepted too.

use rust_decimal::Decimal;
use serde_json::Value;

use crate::money::{Currency, parse_decimal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertType {
    Actual,
    Forecasted,
}

/// What an AWS Budgets notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetsNotice {
    pub budget_name: String,
    pub alert_type: AlertType,
    /// The actual or forecasted amount, by `alert_type`.
    pub amount: Decimal,
    pub currency: Currency,
    pub budgeted: Option<Decimal>,
    pub threshold: Option<Decimal>,
    /// A daily budget ("... per day. Yesterday, ...").
    pub daily: bool,
}

/// Reads `$1,234.56`, `1234.56 USD`, `USD 1234.56` (with an optional leading `>`).
fn money(text: &str) -> Option<(Decimal, Currency)> {
    let t = text.trim().trim_start_matches(['>', '<', '=']).trim();
    let (number, currency) = if let Some(rest) = t.strip_prefix('$') {
        (rest.trim(), Currency::USD)
    } else if let Some((a, b)) = t.split_once(' ') {
        match (Currency::parse(a), Currency::parse(b)) {
            (Ok(c), _) => (b.trim(), c),
            (_, Ok(c)) => (a.trim(), c),
            _ => return None,
        }
    } else {
        return None;
    };
    let digits: String = number.chars().filter(|c| *c != ',').collect();
    parse_decimal(&digits).ok().map(|d| (d, currency))
}

fn from_json(v: &Value) -> Option<Result<BudgetsNotice, String>> {
    let name = v
        .get("budgetName")
        .or_else(|| v.get("BudgetName"))?
        .as_str()?
        .to_string();
    let kind = v
        .get("notificationType")
        .or_else(|| v.get("NotificationType"))
        .and_then(Value::as_str)
        .unwrap_or("ACTUAL");
    let alert_type = if kind.eq_ignore_ascii_case("FORECASTED") {
        AlertType::Forecasted
    } else {
        AlertType::Actual
    };
    let pick = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| v.get(*k))
            .map(|x| x.to_string().trim_matches('"').to_string())
    };
    let amount = pick(&[
        "actualSpend",
        "ActualSpend",
        "forecastedSpend",
        "ForecastedSpend",
        "amount",
    ]);
    Some(
        match amount.as_deref().and_then(|a| parse_decimal(a).ok()) {
            Some(amount) => Ok(BudgetsNotice {
                budget_name: name,
                alert_type,
                amount,
                currency: Currency::USD,
                budgeted: pick(&["budgetLimit", "BudgetLimit"])
                    .and_then(|b| parse_decimal(&b).ok()),
                threshold: None,
                daily: false,
            }),
            None => Err(format!("AWS Budgets message for `{name}` has no amount")),
        },
    )
}

/// Parses the message of an AWS Budgets notification.
pub fn parse(message: &str) -> Result<BudgetsNotice, String> {
    if let Ok(v) = serde_json::from_str::<Value>(message)
        && let Some(notice) = from_json(&v)
    {
        return notice;
    }
    let mut name = None;
    let mut alert_type = None;
    let mut budgeted = None;
    let mut threshold = None;
    let mut amount = None;
    for line in message.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "Budget Name" if !value.is_empty() => name = Some(value.to_string()),
            "Alert Type" => {
                alert_type = match value {
                    "ACTUAL" => Some(AlertType::Actual),
                    "FORECASTED" => Some(AlertType::Forecasted),
                    other => {
                        return Err(format!(
                            "unknown Alert Type `{}`",
                            other.chars().take(40).collect::<String>()
                        ));
                    }
                }
            }
            "Budgeted Amount" => budgeted = money(value),
            "Alert Threshold" => threshold = money(value),
            "ACTUAL Amount" | "FORECASTED Amount" => {
                amount =
                    Some(money(value).ok_or_else(|| format!("`{key}: {value}` is not an amount"))?)
            }
            _ => {}
        }
    }
    let budget_name = name.ok_or("no `Budget Name:` line: not an AWS Budgets notification")?;
    let alert_type = alert_type.ok_or("no `Alert Type:` line")?;
    let (amount, currency) = amount.ok_or("no `ACTUAL Amount:` or `FORECASTED Amount:` line")?;
    Ok(BudgetsNotice {
        budget_name,
        alert_type,
        amount,
        currency,
        budgeted: budgeted.map(|b| b.0),
        threshold: threshold.map(|t| t.0),
        daily: message.contains("per day"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    pub const MONTHLY_ACTUAL: &str = "AWS Budget Notification November 22, 2026
AWS Account 123456789012

Dear AWS Customer,

You requested that we alert you when the ACTUAL Cost associated with your monthly-total budget is greater than $0.16 for the current month. The ACTUAL Cost associated with this budget is $0.59. You can find additional details below and by accessing the AWS Budgets dashboard [1].

Budget Name: monthly-total
Budget Type: Cost
Budgeted Amount: $0.20
Alert Type: ACTUAL
Alert Threshold: > $0.16
ACTUAL Amount: $0.59

[1] https://console.aws.amazon.com/billing/home#/budgets
";

    #[test]
    fn monthly_actual_wording() {
        let n = parse(MONTHLY_ACTUAL).unwrap();
        assert_eq!(n.budget_name, "monthly-total");
        assert_eq!(n.alert_type, AlertType::Actual);
        assert_eq!(
            (n.amount, n.budgeted, n.threshold),
            (dec!(0.59), Some(dec!(0.20)), Some(dec!(0.16)))
        );
        assert!(!n.daily);
    }

    #[test]
    fn daily_and_forecast_wordings_with_thousands() {
        let daily = MONTHLY_ACTUAL
            .replace(
                "for the current month",
                "per day. Yesterday, the ACTUAL Cost was higher",
            )
            .replace("ACTUAL Amount: $0.59", "ACTUAL Amount: $1,204.10");
        let n = parse(&daily).unwrap();
        assert!(n.daily);
        assert_eq!(n.amount, dec!(1204.10));
        let forecast = MONTHLY_ACTUAL
            .replace("Alert Type: ACTUAL", "Alert Type: FORECASTED")
            .replace("ACTUAL Amount:", "FORECASTED Amount:");
        assert_eq!(parse(&forecast).unwrap().alert_type, AlertType::Forecasted);
    }

    #[test]
    fn reworded_prose_is_ignored_but_missing_lines_are_not() {
        let reworded = MONTHLY_ACTUAL.replace(
            "Dear AWS Customer,",
            "Hello from the new wording team,\nSomething: odd",
        );
        assert!(parse(&reworded).is_ok());
        assert!(parse("hello").unwrap_err().contains("Budget Name"));
        assert!(
            parse(&MONTHLY_ACTUAL.replace("ACTUAL Amount: $0.59\n", ""))
                .unwrap_err()
                .contains("Amount")
        );
        assert!(parse(&MONTHLY_ACTUAL.replace("$0.59", "lots")).is_err());
    }

    #[test]
    fn a_json_rendering_is_accepted() {
        let n = parse(r#"{"budgetName":"monthly-total","notificationType":"FORECASTED","forecastedSpend":"812.5"}"#).unwrap();
        assert_eq!(
            (n.alert_type, n.amount),
            (AlertType::Forecasted, dec!(812.5))
        );
    }
}
