def main(argv=None):\n    raise SystemExit(0)
