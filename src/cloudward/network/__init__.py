"""Network Security: captures and live traffic inspected by Suricata-syntax signatures, and
protocol-aware proxies that virtually patch Redis and the Docker Engine API."""
