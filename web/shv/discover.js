// Finds agents (nodes with a launchRexec method) in the broker's tree: a breadth-first
// search with bounded depth, node count and concurrency, so that a big tree neither
// hangs the page nor floods the broker. Hidden nodes (".app", ".broker", …) are skipped
// and an agent's own subtree is not searched.

/**
 * @param {import('./rpc.js').RpcClient} client
 * @param {object} o root (''), maxDepth (6), maxNodes (500), concurrency (6),
 *   onFound(path), onProgress({visited, found, done, truncated}), isCancelled()
 * @returns {Promise<{agents: string[], visited: number, truncated: boolean}>}
 */
export async function findAgents(client, o = {}) {
  const { root = '', maxDepth = 6, maxNodes = 500, concurrency = 6 } = o;
  const agents = [];
  const queue = [{ path: root, depth: 0 }];
  let visited = 0;
  let truncated = false;
  const join = (a, b) => (a ? `${a}/${b}` : b);
  const progress = (done) => o.onProgress?.({ visited, found: agents.length, done, truncated });

  async function visit({ path, depth }) {
    let children;
    try {
      children = await client.ls(path);
    } catch {
      return; // no access or gone: skip the branch
    }
    for (const name of children) {
      if (name.startsWith('.')) continue;
      if (visited >= maxNodes) { truncated = true; return; }
      visited++;
      const p = join(path, name);
      let isAgent = false;
      try { isAgent = await client.hasMethod(p, 'launchRexec'); } catch { /* skip */ }
      if (isAgent) {
        agents.push(p);
        o.onFound?.(p);
      } else if (depth + 1 < maxDepth) {
        queue.push({ path: p, depth: depth + 1 });
      } else {
        truncated = true;
      }
      progress(false);
    }
  }

  // A small pool of workers pulling from the queue.
  let active = 0;
  await new Promise((resolve) => {
    const pump = () => {
      if (o.isCancelled?.()) { if (active === 0) resolve(); return; }
      while (active < concurrency && queue.length) {
        active++;
        visit(queue.shift()).finally(() => { active--; pump(); });
      }
      if (active === 0 && !queue.length) resolve();
    };
    pump();
  });
  progress(true);
  agents.sort();
  return { agents, visited, truncated };
}
