//! E-mail through Amazon SES (v2 API): a plain-text and an HTML body.

use async_trait::async_trait;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as SesMessage};

use spendguard_app::ports::channels::{Channel, SendError};

use spendguard_domain::message::Message;

use spendguard_domain::format;
use spendguard_domain::settings::ChannelKind;

pub struct EmailChannel {
    pub client: aws_sdk_sesv2::Client,
    pub from: String,
    pub to: Vec<String>,
}

fn content(text: &str) -> Result<Content, SendError> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|e| SendError::permanent(e.to_string()))
}

#[async_trait]
impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let mail = format::email(message);
        let body = Body::builder()
            .text(content(&mail.text)?)
            .html(content(&mail.html)?)
            .build();
        let simple = SesMessage::builder()
            .subject(content(&mail.subject)?)
            .body(body)
            .build();
        self.client
            .send_email()
            .from_email_address(&self.from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(self.to.clone()))
                    .build(),
            )
            .content(EmailContent::builder().simple(simple).build())
            .send()
            .await
            .map_err(|e| {
                let retryable = e
                    .as_service_error()
                    .is_none_or(|s| s.is_too_many_requests_exception());
                SendError {
                    message: format!("SES: {}", aws_sdk_sesv2::error::DisplayErrorContext(&e)),
                    retryable,
                }
            })?;
        Ok(())
    }
}
