/**
 * Unit tests for the pure modules (models, state, formatting, validation, chart): they
 * import no JupyterLab package, so ts-jest runs them on Node, type-checked with the
 * extension's strict settings (tsconfig.test.json), without a browser or a bundler.
 */
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/src/__tests__/**/*.spec.ts'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  }
};
