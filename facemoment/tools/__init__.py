"""Programs around the dataflow: the CLI, the frame daemon, recorder, report and trace tools."""
