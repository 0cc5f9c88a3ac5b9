/**
 * A base URL whose connections are refused: port 9 (discard) on loopback, where nothing listens on these machines.
 * A port a test frees by closing its own server is not enough: with tests running in parallel another server can be
 * given the same port before the test connects, and then it answers.
 */
export const refusedBaseUrl = 'http://127.0.0.1:9/v1';
