#!/usr/bin/env node
// Checks Kubernetes YAML against the Kubernetes OpenAPI schema, offline, with the models of the
// npm package kubernetes-models (types, required fields, formats; it does not reject unknown
// fields). Also checks each container named "bulwark" against what Pod Security "restricted"
// asks of a container.
//
//   node validate.js FILE...     (- for stdin)
//
// Prints one line per document ("FILE: document N (Kind name): ok" or the schema's errors) and
// exits 1 if any document is invalid or of a kind it has no model for, 2 on a usage error.

'use strict';

const fs = require('fs');
const YAML = require('yaml');

// apiVersion "apps/v1" -> kubernetes-models/apps/v1, "v1" -> kubernetes-models/v1; the
// Prometheus Operator's kinds (PodMonitor, PrometheusRule) from its own models package.
function modelFor(apiVersion, kind) {
  const base = String(apiVersion).startsWith('monitoring.coreos.com/')
    ? '@kubernetes-models/prometheus-operator'
    : 'kubernetes-models';
  let module;
  try {
    module = require(`${base}/${apiVersion}`);
  } catch (e) {
    return null;
  }
  return module[kind] || null;
}

// Pod Security Standards, "restricted" profile, for one container.
function restrictedProblems(container) {
  const problems = [];
  const sc = container.securityContext || {};
  if (sc.allowPrivilegeEscalation !== false) problems.push('allowPrivilegeEscalation must be false');
  if (sc.privileged) problems.push('must not be privileged');
  if (sc.runAsNonRoot !== true) problems.push('runAsNonRoot must be true');
  if (sc.runAsUser === 0) problems.push('runAsUser must not be 0');
  const drop = (sc.capabilities && sc.capabilities.drop) || [];
  if (!drop.includes('ALL')) problems.push('capabilities.drop must include ALL');
  const add = (sc.capabilities && sc.capabilities.add) || [];
  if (add.some((c) => c !== 'NET_BIND_SERVICE')) problems.push('may add only NET_BIND_SERVICE');
  const seccomp = sc.seccompProfile && sc.seccompProfile.type;
  if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost')
    problems.push('seccompProfile.type must be RuntimeDefault or Localhost');
  if (container.ports && container.ports.some((p) => p.hostPort)) problems.push('no hostPort');
  return problems;
}

function podSpecs(object) {
  switch (object.kind) {
    case 'Pod':
      return [object.spec];
    case 'CronJob':
      return [object.spec.jobTemplate.spec.template.spec];
    case 'Deployment':
    case 'StatefulSet':
    case 'DaemonSet':
    case 'ReplicaSet':
    case 'Job':
      return [object.spec.template.spec];
    default:
      return [];
  }
}

function check(object) {
  const errors = [];
  if (!object || typeof object !== 'object' || Array.isArray(object)) return ['not an object'];
  if (object.kind === 'List') {
    (object.items || []).forEach((item, i) => {
      for (const e of check(item)) errors.push(`items[${i}]: ${e}`);
    });
    return errors;
  }
  const Model = modelFor(object.apiVersion, object.kind);
  if (!Model) return [`no model for apiVersion ${object.apiVersion}, kind ${object.kind}`];
  try {
    new Model(object).validate();
  } catch (e) {
    return [e.message];
  }
  for (const spec of podSpecs(object)) {
    for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
      if (c.name !== 'bulwark') continue;
      for (const p of restrictedProblems(c)) errors.push(`container bulwark: Pod Security restricted: ${p}`);
    }
  }
  return errors;
}

function main(files) {
  if (files.length === 0) {
    console.error('usage: node validate.js FILE... (- for stdin)');
    return 2;
  }
  let failed = 0;
  for (const file of files) {
    const text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
    // The YAML 1.1 schema, as Kubernetes reads manifests: an unquoted yes or on is a boolean.
    const docs = YAML.parseAllDocuments(text, { schema: 'yaml-1.1' });
    docs.forEach((doc, i) => {
      if (doc.errors.length > 0) {
        console.log(`${file}: document ${i + 1}: YAML: ${doc.errors[0].message}`);
        failed++;
        return;
      }
      const object = doc.toJS();
      if (object === null) return;
      const name = object.metadata && object.metadata.name ? ` ${object.metadata.name}` : '';
      const label = `${file}: document ${i + 1} (${object.kind}${name})`;
      const errors = check(object);
      if (errors.length === 0) {
        console.log(`${label}: ok`);
      } else {
        failed++;
        for (const e of errors) console.log(`${label}: ${e}`);
      }
    });
  }
  return failed === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
