"""Types, configuration and trace records: what every layer shares."""
