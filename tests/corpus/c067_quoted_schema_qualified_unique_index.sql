CREATE UNIQUE INDEX "Users_Email_lower_idx" ON public."users" (lower(email));
