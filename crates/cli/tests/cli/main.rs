mod binary;
mod dev;
