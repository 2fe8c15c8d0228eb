"""The Typer front end of crfm-bench: parse options, load params.yaml, call the library, print."""
