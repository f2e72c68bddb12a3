mod admin;
mod api;
mod support;
