// The client Outseta's Supabase guide uses (supabase-js, pinned in package.json), run by
// tests/e2e/tests/supabase.rs. argv[2] is a JSON array of steps; each step makes its own
// client, as a page would after sign-in:
//   { "token": "...", "via": "header" | "cookie", "op": "select" | "insert" | "update" |
//     "delete" | "whoami", "title": "...", "user_id": "..." }
// Prints a JSON array of { status, data, error } in the same order. Asserts nothing itself.
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

const url = process.env.SUPABASE_URL;
const anonKey = process.env.SUPABASE_ANON_KEY;
const steps = JSON.parse(process.argv[2]);
const out = [];
for (const step of steps) {
  const headers = {};
  if (step.token && step.via === 'cookie') {
    headers.Cookie = `Outseta.nocode.accessToken=${step.token}`;
  } else if (step.token) {
    headers['x-outseta-token'] = step.token;
  }
  const supabase = createClient(url, anonKey, {
    global: { headers },
    // Node 20 has no global WebSocket and supabase-js refuses to start without a transport;
    // Realtime is not used.
    realtime: { transport: WebSocket },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
  const todos = () => supabase.from('todos');
  let q;
  switch (step.op) {
    case 'select':
      q = todos().select('user_id,title,is_completed').order('title');
      break;
    case 'insert':
      q = todos().insert({ user_id: step.user_id, title: step.title }).select('user_id,title');
      break;
    case 'update':
      q = todos().update({ is_completed: true }).eq('title', step.title).select('title,is_completed');
      break;
    case 'delete':
      q = todos().delete().eq('title', step.title).select('title');
      break;
    case 'whoami':
      q = supabase.rpc('whoami');
      break;
    default:
      throw new Error(`unknown op ${step.op}`);
  }
  const { status, data, error } = await q;
  out.push({ status, data, error });
}
console.log(JSON.stringify(out));
