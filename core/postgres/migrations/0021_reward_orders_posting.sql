-- The order a redemption posting belongs to (a reversal of that posting
-- is refused: the order is cancelled as an order).
--
-- Without it, each reversal of a redemption read the whole table of
-- orders. Building it locks reward_orders against writes for as long as
-- it takes: a database with many orders can create it beforehand, outside
-- a transaction, with CREATE INDEX CONCURRENTLY under the same name.

CREATE INDEX IF NOT EXISTS reward_orders_posting_idx ON reward_orders (posting_id);
