mod binary;
mod dev;
mod ops;
