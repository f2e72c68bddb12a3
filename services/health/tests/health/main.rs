mod admin;
mod api;
mod binary;
mod support;
