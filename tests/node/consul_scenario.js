// The emulator check's scenario, through the npm `consul` package: register, health, catalog, KV, checks and a
// blocking query.  Prints one JSON object of what each step answered, for tests/test_consul_emulator.py.
"use strict";
const Consul = require("consul");

async function main() {
  const consul = new Consul({ host: "127.0.0.1", port: Number(process.env.CONSUL_PORT) });
  const out = {};
  await consul.agent.service.register({
    name: "web", id: "web-1", address: "10.0.0.1", port: 8080, tags: ["smmf", "v1"],
    meta: { model: "Web/One" }, check: { ttl: "10s", status: "passing", deregistercriticalserviceafter: "90s" },
  });
  out.health = await consul.health.service({ service: "web", passing: true });
  out.catalog = await consul.catalog.service.list();
  out.kvSet = await consul.kv.set("smmf/admin/web-1", "offline");
  out.kvGet = await consul.kv.get("smmf/admin/web-1");
  out.kvRecurse = await consul.kv.get({ key: "smmf/", recurse: true });
  out.kvKeys = await consul.kv.keys("smmf/");
  out.kvMissing = (await consul.kv.get("smmf/none")) ?? null;
  await consul.agent.check.pass("service:web-1");
  try {
    await consul.agent.check.pass("service:nope");
    out.passUnknown = "accepted";
  } catch (err) {
    out.passUnknown = { status: err.statusCode, message: err.message };
  }
  out.blocking = await blocking(consul);
  out.kvDelete = await consul.kv.del({ key: "smmf/", recurse: true });
  await consul.agent.service.deregister("web-1");
  await consul.agent.service.deregister("web-2");
  out.after = await consul.health.service({ service: "web" });
  console.log(JSON.stringify(out));
}

// A watch (the package's blocking-query loop): its first answer, then the one a second registration wakes.
function blocking(consul) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const watch = consul.watch({ method: consul.health.service, options: { service: "web", wait: "5s" } });
    watch.on("change", (data, res) => {
      seen.push({ index: res.headers["x-consul-index"], ids: data.map((e) => e.Service.ID).sort() });
      if (seen.length === 1) {
        consul.agent.service.register({ name: "web", id: "web-2", check: { ttl: "10s", status: "passing" } });
      } else {
        watch.end();
        resolve(seen);
      }
    });
    watch.on("error", (err) => { watch.end(); reject(err); });
  });
}

main().catch((err) => { console.error(err.stack || String(err)); process.exit(1); });
