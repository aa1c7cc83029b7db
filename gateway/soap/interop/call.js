// Calls every operation of the Puntos SOAP face with node-soap, a client
// written elsewhere, built from the WSDL the server serves. Run by
// gateway/soap's TestNodeSoapInterop:
//
//   node call.js BASE_URL VERSION(11|12) PREFIX OUT_DIR
//
// with SOAP_USER and SOAP_PASSWORD in the environment (PasswordDigest). It
// prints one "name value" line per figure the test checks and writes each
// raw answer to OUT_DIR/<operation>.xml for schema validation.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const soap = require('soap');

async function main() {
  const [base, version, prefix, outDir] = process.argv.slice(2);
  const client = await soap.createClientAsync(`${base}/soap?wsdl`, {
    forceSoap12Headers: version === '12',
  });
  client.setSecurity(new soap.WSSecurity(process.env.SOAP_USER, process.env.SOAP_PASSWORD, {
    passwordType: 'PasswordDigest',
  }));

  const a = `${prefix}-A`;
  const b = `${prefix}-B`;
  const txn = (name) => `${prefix}-${name}`;
  const target = (ref) => ({ Program: 'telco', CustomerRef: ref });
  let seq = 0;

  // call runs one operation, keeps its raw answer, and returns the result.
  async function call(op, args) {
    const [result] = await client[`${op}Async`](args);
    seq += 1;
    fs.writeFileSync(path.join(outDir, `${String(seq).padStart(2, '0')}-${op}.xml`),
      client.lastResponse);
    return result;
  }
  const print = (name, value) => console.log(`${name} ${value}`);

  let r = await call('EnrollMember', { ...target(a), TxnId: txn('enr-a'), Channel: 'web' });
  print('enroll.status', r.Member.Status);
  await call('EnrollMember', { ...target(b), TxnId: txn('enr-b') });

  const bill = { ...target(a), TxnId: txn('bill-1'), EventType: 'bill_paid', Amount: '29.85',
    OccurredAt: '2026-09-05T12:00:00-03:00' };
  r = await call('Accrue', bill);
  print('accrue.points', r.Result.Points);
  r = await call('Accrue', bill);
  print('accrue.replayed', r.Result.Replayed);
  await call('Accrue', { ...target(a), TxnId: txn('bill-2'), EventType: 'bill_paid',
    Amount: '100.00', OccurredAt: '2026-10-05T12:00:00-03:00' });

  r = await call('GetMember', target(a));
  print('member.available', r.Member.Balance.Available);

  r = await call('Redeem', { ...target(a), TxnId: txn('red-1'), Points: 50, Reason: 'voucher' });
  print('redeem.available', r.Result.Balance.Available);
  r = await call('CancelRedemption', { ...target(a), TxnId: txn('cancel-1'),
    RedemptionTxnId: txn('red-1'), Reason: 'order cancelled' });
  print('cancel.available', r.Result.Balance.Available);
  r = await call('TransferPoints', { ...target(a), TxnId: txn('xfer-1'), ToCustomerRef: b,
    Points: 30 });
  print('transfer.available', r.Result.Balance.Available);

  r = await call('GetBalance', target(a));
  const lots = [].concat(r.Lot || []);
  const expiries = [].concat(r.NextExpiry || []);
  print('balance.available', r.Balance.Available);
  print('balance.lots', lots.map((l) => `${l.Remaining}@${l.ExpiresAt.toISOString()}`).join(','));
  print('balance.next_expiry', expiries.map((e) => e.Points).join(','));
  r = await call('GetBalance', target(b));
  print('balance_b.available', r.Balance.Available);

  r = await call('GetMovements', { ...target(a), Limit: 2 });
  print('movements.page', [].concat(r.Movement).map((m) => m.Kind).join(','));
  r = await call('GetMovements', { ...target(a), Limit: 10, Cursor: r.NextCursor });
  print('movements.rest', [].concat(r.Movement).map((m) => m.Kind).join(','));

  // A refusal arrives as a fault whose detail names the code and the field.
  try {
    await call('Redeem', { ...target(a), TxnId: txn('red-big'), Points: 100000 });
    print('fault', 'none');
  } catch (err) {
    fs.writeFileSync(path.join(outDir, '99-fault.xml'), client.lastResponse);
    const body = err.root.Envelope.Body.Fault;
    const detail = body.detail || body.Detail;
    print('fault', `${detail.PuntosFault.Code} ${detail.PuntosFault.Field}`);
  }
}

main().catch((err) => {
  console.error(err && err.body ? err.body : err);
  process.exit(1);
});
