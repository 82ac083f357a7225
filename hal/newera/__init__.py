"""New Era Pump Systems (NE-300/500/1000/1600 family, also sold as WPI Aladdin)."""
