"""Applications: every command-line entry point, one module per `ros-amf` verb (cli.py dispatches). Imported by
nothing; the only package that uses argparse."""
