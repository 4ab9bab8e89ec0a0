"""What `meshc stat` computes from the proxies' admin endpoints, without I/O: Prometheus text
parsed (prom.py), rates and percentiles between two scrapes, rows per service and route
(stats.py), and the table (table.py). compiler/cli/stat.py does the HTTP and the terminal."""
