-- Departments, funding accounts, monthly budgets and expenses. Money is bigint minor units in the
-- tenant's currency. Balances are never stored: the views below derive them from budgets and expenses,
-- so editing or deleting an expense can never double-count.

-- +goose Up
-- +goose StatementBegin
CREATE TABLE departments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz
);
CREATE UNIQUE INDEX departments_name_key ON departments (lower(name));

-- A member records expenses for their department.
ALTER TABLE users ADD COLUMN department_id bigint REFERENCES departments ON DELETE SET NULL;

-- Where money comes from: a grant, a cost centre, a year's allocation.
CREATE TABLE funding_accounts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL CHECK (name <> ''),
    total_minor  bigint      NOT NULL CHECK (total_minor >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    archived_at  timestamptz
);
CREATE UNIQUE INDEX funding_accounts_name_key ON funding_accounts (lower(name));

-- A department's budget for one month, drawn from one account. The app keeps the sum of an account's
-- budgets within its total (it locks the account row while it checks).
CREATE TABLE budgets (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    department_id bigint      NOT NULL REFERENCES departments,
    account_id    bigint      NOT NULL REFERENCES funding_accounts,
    month         date        NOT NULL CHECK (extract(day FROM month) = 1),
    amount_minor  bigint      NOT NULL CHECK (amount_minor >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (department_id, account_id, month)
);
CREATE INDEX budgets_account_id_idx ON budgets (account_id);
CREATE INDEX budgets_month_idx ON budgets (month);

CREATE TABLE expenses (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    budget_id        bigint      NOT NULL REFERENCES budgets,
    spent_on         date        NOT NULL,
    description      text        NOT NULL CHECK (description <> ''),
    note             text        NOT NULL DEFAULT '',
    amount_minor     bigint      NOT NULL CHECK (amount_minor > 0),
    status           text        NOT NULL DEFAULT 'approved'
                                 CHECK (status IN ('pending', 'approved', 'rejected')),
    created_by       bigint      NOT NULL REFERENCES users,
    decided_by       bigint      REFERENCES users,
    decided_at       timestamptz,
    rejection_reason text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'rejected' OR rejection_reason <> '')
);
CREATE INDEX expenses_budget_id_idx ON expenses (budget_id);
CREATE INDEX expenses_spent_on_idx ON expenses (spent_on DESC, id DESC);
CREATE INDEX expenses_pending_idx ON expenses (created_at) WHERE status = 'pending';

-- Spent counts approved expenses; pending ones are shown apart and rejected ones not at all.
CREATE VIEW budget_balances AS
SELECT b.id            AS budget_id,
       b.department_id,
       b.account_id,
       b.month,
       b.amount_minor,
       coalesce(sum(e.amount_minor) FILTER (WHERE e.status = 'approved'), 0)::bigint AS spent_minor,
       coalesce(sum(e.amount_minor) FILTER (WHERE e.status = 'pending'), 0)::bigint  AS pending_minor
FROM budgets b
LEFT JOIN expenses e ON e.budget_id = b.id
GROUP BY b.id;

CREATE VIEW account_balances AS
SELECT a.id                                    AS account_id,
       a.total_minor,
       coalesce(sum(b.amount_minor), 0)::bigint AS committed_minor,
       (a.total_minor - coalesce(sum(b.amount_minor), 0))::bigint AS available_minor
FROM funding_accounts a
LEFT JOIN budgets b ON b.account_id = a.id
GROUP BY a.id;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DROP VIEW account_balances;
DROP VIEW budget_balances;
DROP TABLE expenses;
DROP TABLE budgets;
DROP TABLE funding_accounts;
ALTER TABLE users DROP COLUMN department_id;
DROP TABLE departments;
-- +goose StatementEnd
