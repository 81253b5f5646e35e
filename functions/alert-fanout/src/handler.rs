use lambda_runtime::Diagnostic;
use serde_json::Value;

/// Refuses the event: this function is not built yet.
pub async fn handle(_event: Value) -> Result<Value, Diagnostic> {
    Err(Diagnostic {
        error_type: "NotImplemented".into(),
        error_message: "alert-fanout is not implemented yet: it refuses every event".into(),
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn refuses_every_event() {
        let err = super::handle(serde_json::json!({})).await.unwrap_err();
        assert_eq!(err.error_type, "NotImplemented");
        assert!(err.error_message.contains("alert-fanout"));
    }
}
