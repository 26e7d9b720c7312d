"""Local-only tools: the embedded broker, the demo, synthetic traffic, bias probes, output readers.

Production code (the worker, the policy agent, the gateway, the tap) never imports this
package; only the CLI, the tests and the benchmarks do (``tests/test_layout.py`` checks it).
"""
