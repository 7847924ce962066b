// Makes the single mongod a one-node replica set (transactions need one). Idempotent.
try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] });
  print("replica set rs0 initiated");
}
