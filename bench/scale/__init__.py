"""The order API at scale, against PostGraphile 5 and the raw database: one run, one report.

    python -m bench.scale --orders 100000 --seconds 5          # a few minutes on 2 cores
    python -m bench.scale --orders 1000000 --seconds 20        # the issue's data set

Modules, in the order a run uses them:

- ``database``  the PostgreSQL to use: DATABASE_URL (a superuser, to load) and
                API_DATABASE_URL, or a throwaway embedded server
- ``dataset``   orders, fills and audit rows as the product writes them, bulk-loaded
- ``traders``   the 1,000 traders whose tokens wrk rotates, and what each should see
- ``workloads`` W1..W4: the GraphQL documents of each server and their variables
- ``servers``   ``python -m app serve`` (the product's default) and PostGraphile 5
- ``checks``    correctness before timing: every answer is that trader's own data
- ``wrk``       the load: a Lua script rotating the tokens, percentiles out as JSON
- ``pgbench``   the raw database: the API's own transactions, replayed by pgbench
- ``report``    the Markdown table with ratios, the JSON file, the PNG chart
- ``profiling`` (on its own) cProfile of one workload through the whole app, in-process
"""
