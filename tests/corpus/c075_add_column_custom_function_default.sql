ALTER TABLE users ADD COLUMN referral_code text DEFAULT make_referral_code();
