// Healthcheck of the `mongodb` service (run by mongosh every few seconds).
// Initiates the single-node replica set on the first run, then reports healthy only once this
// node is the writable primary. Idempotent: later runs only check.
// Settings come from the container environment (see docker/docker-compose.yml).
const setName = process.env.MONGODB_REPLICA_SET || 'rs0';
const memberHost = process.env.MONGODB_MEMBER_HOST || 'mongodb:27017';

let initiated = true;
try {
  rs.status();
} catch (e) {
  if (e.codeName === 'NotYetInitialized' || e.code === 94) {
    initiated = false;
  } else {
    print(`replica set status failed: ${e.message}`);
    quit(1);
  }
}

if (!initiated) {
  const res = rs.initiate({ _id: setName, members: [{ _id: 0, host: memberHost }] });
  print(`rs.initiate(${setName}, ${memberHost}): ok=${res.ok}`);
}

const hello = db.adminCommand({ hello: 1 });
if (hello.setName !== setName || hello.isWritablePrimary !== true) {
  print(`waiting for primary (setName=${hello.setName}, isWritablePrimary=${hello.isWritablePrimary})`);
  quit(1);
}
