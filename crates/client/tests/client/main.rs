//! Integration tests of ikit-client against ikit-emulator (and local fakes of the cloud
//! metadata services). One binary; modules by theme.

mod api;
mod auth;
mod aws;
mod cache;
mod example;
mod facade;
mod invalidation;
mod lifecycle;
mod logs;
mod reliability;
mod support;
mod telemetry;
mod tls;
