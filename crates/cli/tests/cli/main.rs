mod dev;
