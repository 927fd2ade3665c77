/* Ünïcödé : ajoute la colonne « pays » — 国家 */
ALTER TABLE accounts ADD COLUMN country_code text DEFAULT 'FR'; -- défaut : France
COMMENT ON COLUMN accounts.country_code IS 'ISO 3166-1 alpha-2 — ex. «FR»';
