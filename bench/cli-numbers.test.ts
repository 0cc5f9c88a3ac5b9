import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import {
  nonNegativeNumber,
  positiveInteger,
  positiveIntegerList,
  positiveNumber,
  share,
  spaceSeparatedFlags,
  wholeNumber,
} from './cli-numbers.js';

describe('bench CLI number parsers', () => {
  it('accept what they name and refuse the rest with an InvalidArgumentError', () => {
    const cases: Array<[(value: string) => unknown, string[], string[]]> = [
      [positiveInteger, ['1', '2000'], ['0', '-1', '1.5', '', 'x', '1e400']],
      [wholeNumber, ['0', '8192'], ['-1', '0.5', '', 'ten']],
      [positiveNumber, ['0.5', '10'], ['0', '-2', '', 'Infinity']],
      [nonNegativeNumber, ['0', '0.3'], ['-0.1', '', 'NaN']],
      [share, ['0', '0.92', '1'], ['1.01', '-0.1', '']],
      [positiveIntegerList, ['1', '1,2', ' 32 , 256 '], ['', '1,,2', '1,0', '1,x']],
    ];
    for (const [parse, good, bad] of cases) {
      for (const value of good) expect(() => parse(value), `${parse.name}(${value})`).not.toThrow();
      for (const value of bad) expect(() => parse(value), `${parse.name}(${value})`).toThrow(InvalidArgumentError);
    }
    expect(positiveIntegerList(' 32 , 256 ')).toEqual([32, 256]);
    expect(share('0.92')).toBe(0.92);
    expect(spaceSeparatedFlags(' --a  --b=1 ')).toEqual(['--a', '--b=1']);
    expect(() => spaceSeparatedFlags('  ')).toThrow(InvalidArgumentError);
  });
});
