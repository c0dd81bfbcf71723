// Validates HTTPRoute documents (JSON, one per argument file) against the Gateway API CRD
// schema that @kubernetes-models/gateway-api ships (AJV, generated from the CRDs).
import { readFileSync } from "node:fs";
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute";
let bad = 0;
for (const file of process.argv.slice(2)) {
  try {
    new HTTPRoute(JSON.parse(readFileSync(file, "utf8"))).validate();
    console.log(`ok ${file}`);
  } catch (e) {
    bad += 1;
    console.log(`invalid ${file}: ${e.message}`);
  }
}
process.exit(bad ? 1 : 0);
