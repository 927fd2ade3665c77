ALTER TABLE IF EXISTS ONLY public.orders ADD FOREIGN KEY (user_id) REFERENCES public.users (id);
