-- Where a gateway run takes calls from its peers: each function has a home gateway among the
-- live runs with an address (consistent hashing, gateway/routing.py), and a call that lands on
-- another gateway is sent there, so the function's warm instances are in one place.
-- NULL: this run is not a home (it has not advertised an address yet, or is stopping).

ALTER TABLE ember_gateways ADD COLUMN address text;
