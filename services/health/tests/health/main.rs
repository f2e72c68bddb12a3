mod admin;
mod api;
mod binary;
mod docs;
mod support;
