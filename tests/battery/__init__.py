"""A battery of bad inputs run through the CLI in-process; each case is classified (see ``cases``)."""
