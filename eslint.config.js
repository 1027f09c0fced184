// Type-aware lint: floating promises are bugs in a replication engine (a lost
// rejection is a lost write), so they are errors here.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'bin/**', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // The admin page: plain browser modules, served as they are (no build
    // step, no types), so the type-aware rules do not apply to them.
    files: ['admin-ui/**/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      sourceType: 'module',
      globals: {
        window: 'readonly',
        document: 'readonly',
        location: 'readonly',
        history: 'readonly',
        fetch: 'readonly',
        URL: 'readonly',
        URLSearchParams: 'readonly',
        EventSource: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
      },
    },
  },
  {
    // core/ and sim/ are deterministic: time and randomness come in through
    // the injected clock and PRNG, never from globals.
    files: ['core/**/*.ts', 'sim/**/*.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'Date', property: 'now', message: 'Use the injected clock.' },
        { object: 'Math', property: 'random', message: 'Use the injected random source.' },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'setTimeout', message: 'Use the injected clock.' },
        { name: 'setInterval', message: 'Use the injected clock.' },
      ],
    },
  },
  {
    // The simulator's oracle states the rules independently of the code it
    // checks (issue 12): nothing of core/, peers/, server-peer/ or the rest
    // of the project, and no Yjs. test/sim-oracle.test.ts checks the same.
    files: ['sim/oracle/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['../*', '**/core/*', '**/peers/*', '**/server-peer/*', 'yjs'],
              message: 'sim/oracle/ must not depend on the code it checks.',
            },
          ],
        },
      ],
    },
  },
)
