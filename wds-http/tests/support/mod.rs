//! What the sink tests share: signing secrets and messages.

#![allow(dead_code)]

use wds_http::wds_core::{parse::Record, JobId, Message};

pub(crate) const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM=";

/// A message of job `job` at `line`.
pub(crate) fn message(job: &str, line: u64, user: &str, text: &str) -> Message {
    Message::new(&JobId::new(job), Record::new(line, user, text))
}
