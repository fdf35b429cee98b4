"""Drives scripts/request-instructions' phases: sequential keep-alive requests, with
callgrind's counters zeroed before each phase and dumped after it."""
import datetime
import http.client
import json
import subprocess
import sys
import time
import uuid

port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)


def call(method, path, body=None, headers=None, form=False):
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = body if form else json.dumps(body)
        headers["content-type"] = "application/x-www-form-urlencoded" if form else "application/json"
    conn.request(method, path, body=data, headers=headers)
    reply = conn.getresponse()
    return reply.status, reply.read()


def expect(status, reply):
    assert reply[0] == status, reply
    return json.loads(reply[1]) if reply[1] else None


for _ in range(3000):
    try:
        if call("GET", "/readyz")[0] == 200:
            break
    except (ConnectionError, http.client.HTTPException):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    time.sleep(0.2)

form = "grant_type=password&username=instructions-admin%40example.com&password=Secretpassword123456"
admin = {"authorization": "Bearer " + expect(200, call("POST", "/v1/auth/token", form, form=True))["access_token"]}
now = datetime.datetime.now(datetime.timezone.utc)
stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")


def sale_of(sku, units):
    product = {"title": f"Product {sku}", "description": "For counting instructions.", "brand": "Acme",
               "status": "active", "variants": [{"sku": sku, "price": {"amount": 1000, "currency": "USD"}}]}
    product = expect(201, call("POST", "/v1/products", product, admin))
    expect(200, call("PUT", f"/v1/inventory/{sku}", {"on_hand": units, "reason": "instructions"}, admin))
    sale = {"sku": sku, "price": {"amount": 500, "currency": "USD"}, "quantity": units,
            "per_customer_limit": units, "starts_at": stamp(now - datetime.timedelta(seconds=5)),
            "ends_at": stamp(now + datetime.timedelta(hours=2))}
    return product["id"], expect(201, call("POST", "/v1/flash-sales", sale, admin))["id"]


product, sold_out = sale_of("HOT-1", 1)
_, big = sale_of("BIG-1", 100_000)
registered = expect(201, call("POST", "/v1/auth/register", {"email": "buyer@example.com", "password": "flash-sale-buyer"}))
buyer = {"authorization": "Bearer " + registered["access_token"]}
key = lambda: {"idempotency-key": uuid.uuid4().hex}
expect(201, call("POST", f"/v1/flash-sales/{sold_out}/purchases", {"quantity": 1}, {**buyer, **key()}))

phases = {
    "get": lambda: expect(200, call("GET", f"/v1/products/{product}")),
    "sold": lambda: expect(409, call("POST", f"/v1/flash-sales/{sold_out}/purchases", {"quantity": 1}, {**buyer, **key()})),
    "buy": lambda: expect(201, call("POST", f"/v1/flash-sales/{big}/purchases", {"quantity": 1}, {**buyer, **key()})),
}
time.sleep(3)  # lets the set-up's background work (indexing, flushes) finish
for name, request in phases.items():
    for _ in range(50):
        request()
    subprocess.run(["callgrind_control", "-z", pid], capture_output=True, check=True)
    for _ in range(n):
        request()
    subprocess.run(["callgrind_control", "-d", name, pid], capture_output=True, check=True)
