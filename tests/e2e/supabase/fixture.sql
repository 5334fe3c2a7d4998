-- Self-hosted Supabase's Data API, as far as the database sees it, for
-- tests/e2e/tests/supabase.rs: Supabase's roles, its auth.jwt()/auth.uid()/auth.role()
-- (same definitions as Supabase's auth migrations: they read request.jwt.claims, which
-- PostgREST sets from the verified JWT), the table and the four policies of Outseta's guide
-- "Supabase + Outseta Auth with RLS" verbatim, and outseta_auth's settings.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN BYPASSRLS;
    END IF;
END $$;
GRANT anon, authenticated, service_role TO authenticator;

CREATE SCHEMA auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text
$$;

-- Outseta's guide, verbatim.
create table public.todos (
  id uuid primary key default gen_random_uuid(),
  user_id text not null,
  title text not null,
  is_completed boolean not null default false,
  created_at timestamptz not null default now()
);
create index todos_user_idx on public.todos (user_id);
alter table public.todos enable row level security;
create policy "select own" on public.todos
  for select using (user_id = auth.jwt() ->> 'sub');
create policy "insert own" on public.todos
  for insert with check (user_id = auth.jwt() ->> 'sub');
create policy "update own" on public.todos
  for update using (user_id = auth.jwt() ->> 'sub')
  with check (user_id = auth.jwt() ->> 'sub');
create policy "delete own" on public.todos
  for delete using (user_id = auth.jwt() ->> 'sub');

-- Supabase grants the API roles table privileges on public; RLS decides the rows.
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role;

-- What the request looks like to the database: supabase.rpc('whoami').
CREATE FUNCTION public.whoami() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('current_user', current_user, 'auth_role', auth.role(),
                            'sub', auth.jwt() ->> 'sub', 'iss', auth.jwt() ->> 'iss')
$$;
