// A Node.js user of modelstream: produce feature events with kafkajs, read the predictions back.
// usage: node interop.js BROKER PREFIX COUNT  → prints {"sent": N, "predictions": [...]} as JSON
const { Kafka, logLevel } = require("kafkajs");

const [broker, prefix, countArg] = process.argv.slice(2);
const count = parseInt(countArg || "20", 10);
const kafka = new Kafka({ clientId: "interop-js", brokers: [broker], logLevel: logLevel.NOTHING });

async function main() {
  const runId = `js-${Date.now()}`;
  const consumer = kafka.consumer({ groupId: `${runId}-group`, sessionTimeout: 6000 });
  await consumer.connect();
  await consumer.subscribe({ topic: `${prefix}predictions`, fromBeginning: true });
  const seen = new Map();
  const done = new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ message }) => {
        const p = JSON.parse(message.value.toString());
        if (p.event_id.startsWith(runId)) seen.set(p.event_id, p);
        if (seen.size >= count) resolve();
      },
    });
  });

  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) {
    const entity = `${runId}-c${i}`;
    messages.push({
      key: entity,
      value: JSON.stringify({
        event_id: `${runId}-e${i}`,
        entity_id: entity,
        event_time: Date.now(),
        model: "agrawal",
        features: { salary: 30000 + 1000 * i, commission: 0, age: 25 + i, elevel: i % 5,
                    car: 1 + (i % 20), zipcode: i % 9, hvalue: 150000, hyears: 10, loan: 1000 },
      }),
    });
  }
  await producer.send({ topic: `${prefix}features`, messages });
  await producer.disconnect();

  let timer;
  const timeout = new Promise((resolve) => { timer = setTimeout(resolve, 60000); });
  await Promise.race([done, timeout]);
  clearTimeout(timer);
  await consumer.disconnect();
  console.log(JSON.stringify({ sent: count, predictions: [...seen.values()] }));
}

main().catch((err) => { console.error(err); process.exit(1); });
