-- Back to exactly what 011 made.
DROP TABLE order_api_private.trusted_documents;
DROP TABLE order_api_private.trusted_documents_version;
DROP FUNCTION order_api_private.trusted_documents_changed();
