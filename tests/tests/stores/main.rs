//! The state stores, one test binary: the conformance suite (one module per capability of the
//! store port), theft detection over stored hour counters, and the incident lifecycle against
//! its reference model, on the embedded SQLite store and on DynamoDB through moto.

mod dynamodb;
mod hotitem;
mod sqlite;
