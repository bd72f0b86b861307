-- The live-update announcement of functions.sql (migration 004's downgrade runs this again).
REVOKE ALL ON FUNCTION orders_announce_change() FROM PUBLIC;
CREATE TRIGGER orders_announce_change AFTER INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_announce_change();
